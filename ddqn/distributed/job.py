"""The driver → worker contract: what the driver broadcasts to every worker task (as JSON text)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class JobSpec:
    """The architecture (prototxt text and its source name), the config, the server address and the secret."""

    net_text: str
    net_source: str
    config: dict
    address: str
    secret_hex: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> JobSpec:
        return JobSpec(**json.loads(text))

"""The sharded parameter server (config ``ps_shards`` > 1): S shard processes, each owning a slice of θ.

``slices`` cuts θ into S slices, ``process`` is one shard's process, ``server`` its server, ``files`` its slice
on disk, ``votes`` the vote that makes a push all or nothing across shards; ``control`` and ``group`` are the
driver's side, ``client`` the workers'.
"""

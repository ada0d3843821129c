"""The sharded parameter server (config ``ps_shards`` > 1): S shards, each owning a slice of θ.

``slices`` cuts θ into S slices, ``server`` is one shard's server, ``host`` builds it from its slice and answers the
driver's commands, ``files`` its slice on disk, ``votes`` the vote that makes a push all or nothing across shards.
Where the shards run (``ps_placement``): ``process``, a shard process on the driver's host, driven over pipes by
``control``; ``task``, a long-running Spark task on an executor, driven over the authenticated control channel
(``channel``: its wire format) by ``links``. ``group`` is the driver's side for both, ``client`` the workers'.
"""

"""Tools (rank 4): ``.weights`` <-> ``.pt`` conversion (:mod:`.convert`) and anchor clustering (:mod:`.anchors`)."""

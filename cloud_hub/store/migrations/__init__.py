"""Alembic migrations of the hub's database, shipped with the package.

`env.py` and `versions/` are read by Alembic's script directory; nothing here needs an
alembic.ini: `cloud_hub.store.schema_version` drives them through Alembic's API.
"""

"""Camera snapshots: fetched on an alarm that asks for one or on ``camera_snapshot``,
kept on disk within a cap, published as JPEG on ``ROOT/snapshots/{camera}/{id}``.

- :mod:`.config`: the ``snapshots:`` section (folder, cap, timeouts, cameras by URL);
- :mod:`.fetch`: one JPEG over HTTP(S) with digest, basic or no login;
- :mod:`.store`: the folder, one file per picture, written once;
- :mod:`.service`: :class:`~.service.SnapshotService` (take, keep, send);
- :mod:`.alarms`: alarms of rules with ``snapshot: <camera>`` carry the picture.
"""

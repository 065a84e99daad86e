"""engine/storage/repair.py: which files a repair takes a tracks table or a manifest from (a mutation sweep
left the name checks open). A copy of a tracks table under a name that is not its own must not be picked
up: not by the manifest recovery (a ``tracks-N.arrow`` whose embedded manifest names another tracks file,
and ``tracks-`` names with something before or after), not as the previous tracks table (a previous file
whose name does not start with ``tracks-``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from songseek.engine.hashing import file_sha256
from songseek.engine.storage.manifest import read_manifest
from songseek.engine.storage.repair import repair_library
from tests.engine.test_repair_mutations import build, live


def _same(got: dict[str, np.ndarray], want: dict[str, np.ndarray], ids: set[str]) -> bool:
    return got.keys() == ids and all(np.array_equal(got[t], want[t]) for t in ids)


def test_manifest_recovery_skips_tracks_tables_under_a_name_not_their_own(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    vecs = build(root, {"a": 2, "b": 1, "c": 3}, seed=4)  # one commit per track
    m = read_manifest(root)
    older = [n for n in m.previous_files if n.startswith("tracks-")]
    assert older and (root / older[0]).exists()
    # decoys, all newer by number than the real tables: the older table (tracks a, b) under a newer number,
    # and copies of it and of the newest under names that only contain a tracks table's name
    shutil.copyfile(root / older[0], root / "tracks-000099.arrow")
    for name in ("tracks-000098.arrow.bak", "old-tracks-000097.arrow", "tracks-000096.arrowx"):
        shutil.copyfile(root / older[0], root / name)
    shutil.copyfile(root / m.tracks_file, root / "tracks-000095.arrow.tmp")
    (root / "manifest.json").unlink()
    report = repair_library(root)
    assert report.manifest_recovered_from == m.tracks_file  # the real newest, not a decoy
    assert _same(live(root), vecs, {"a", "b", "c"})  # no committed track lost


def test_a_previous_file_not_named_tracks_is_not_taken_as_the_previous_tracks_table(tmp_path: Path) -> None:
    """The newest tracks table is damaged: repair falls back to the previous one (tracks a, b), not to a
    previous file of another kind that holds a copy of the newest (tracks a, b, c) and verifies."""
    root = tmp_path / "lib"
    vecs = build(root, {"a": 2, "b": 1, "c": 3}, seed=5)
    m = read_manifest(root)
    older = [n for n in m.previous_files if n.startswith("tracks-")]
    assert older
    decoy = "extra-tracks-000002.arrow"  # an extra table's name (a name previous_files may hold)
    shutil.copyfile(root / m.tracks_file, root / decoy)
    data = json.loads((root / "manifest.json").read_text())
    data["previous_files"] = [decoy, *data["previous_files"]]
    data["checksums"][decoy] = file_sha256(root / decoy)
    (root / "manifest.json").write_text(json.dumps(data))
    raw = bytearray((root / m.tracks_file).read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # damaged: its checksum no longer matches
    (root / m.tracks_file).write_bytes(bytes(raw))
    report = repair_library(root)
    assert any(f"used the previous tracks table {older[0]}" in a for a in report.actions), report.actions
    assert report.dropped_tracks == 0
    assert _same(live(root), vecs, {"a", "b"})  # c was committed after the previous table: gone

from workbench.hardware.isolated import probe_isolated, snapshot_from_dict
from workbench.hardware.probe import probe


def test_snapshot_roundtrips_through_json() -> None:
    snapshot = probe()
    assert snapshot_from_dict(snapshot.to_dict()) == snapshot


def test_probe_in_a_child_process_matches_this_one() -> None:
    here, there = probe(), probe_isolated()
    assert (there.os, there.cpu.model, there.cpu.physical_cores) == (
        here.os, here.cpu.model, here.cpu.physical_cores)
    assert there.memory.total_bytes == here.memory.total_bytes

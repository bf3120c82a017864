"""The efficiency study's machinery: real (tiny) measurements, the ratio arithmetic, the table and the plot."""

from __future__ import annotations

import argparse

import pytest

from bench import efficiency


def _row(name, family, infer32, infer1, train_ms, work):
    return {
        "method": name,
        "family": family,
        "train_ms": train_ms,
        "train_ms_min": train_ms / 2,
        "train_work_mb": work,
        "train_peak_mb": 500.0 + work,
        "train_delta_mb": work,
        "train_first_call_s": 1.0,
        "infer_ms_per_task_b32": infer32,
        "infer_ms_per_task_b32_min": infer32,
        "infer_ms_per_task_b1": infer1,
        "infer_ms_per_task_b1_min": infer1,
        "infer_work_mb": 5.0,
        "infer_peak_mb": 450.0,
    }


def test_ratios_table_and_plot(tmp_path):
    rows = [
        _row("CMML (mean + dot + FiLM)", "cmml", 0.05, 0.25, 40.0, 20.0),
        _row("MeLU-5 (1st order)", "maml", 0.20, 0.30, 60.0, 30.0),
        _row("MeLU-5 (2nd order)", "maml", 0.20, 0.30, 100.0, 80.0),
        _row("MeLU-20 (1st order)", "maml", 0.65, 0.90, 200.0, 50.0),
    ]
    rows[2]["infer_shared_with"] = "MeLU-5 (1st order)"
    rows[1]["infer_ms_per_task_b32_min"] = 0.1  # minima give their own ratio
    rows[0]["paired_b32"] = {
        "MeLU-20 (1st order)": {"median": 12.5, "q25": 12.0, "q75": 13.25, "pairs": 40, "block": 13}
    }
    found = {d: (v, low) for d, v, low, _, _ in efficiency.ratios(rows, 32)}
    paired = {d: p for d, _, _, p, _ in efficiency.ratios(rows, 32)}
    n = "CMML (mean + dot + FiLM)"
    assert found[f"{n}: inference speed-up vs MeLU-5, batches of 32"] == pytest.approx((4.0, 2.0))
    assert found[f"{n}: inference speed-up vs 20-step MAML (MeLU-20), batches of 32"][0] == pytest.approx(13.0)
    assert paired[f"{n}: inference speed-up vs 20-step MAML (MeLU-20), batches of 32"]["median"] == 12.5
    assert paired[f"{n}: inference speed-up vs MeLU-5, batches of 32"] is None  # not measured paired: left blank
    assert paired[f"{n}: inference speed-up vs 20-step MAML (MeLU-20), one task per call"] is None
    assert found[f"{n}: inference speed-up vs MeLU-5, one task per call"][0] == pytest.approx(1.2)
    assert found[f"{n}: training step working memory, MeLU-5 (2nd order) / CMML"] == pytest.approx((4.0, None))
    assert found[f"{n}: training time per meta-batch, MeLU-5 (2nd order) / CMML"] == pytest.approx((2.5, 2.5))
    args = argparse.Namespace(support=64, query=100, batch=32, rounds=5, calls=6, pairs=40)
    table = efficiency.markdown(rows, args)
    assert "| MeLU-5 (2nd order) | 100.0 (50.0) | 80.0 | 580 | 80 |" in table and "0.200 (0.200) ¹" in table
    assert f"| {n}: inference speed-up vs MeLU-5, batches of 32 | 4.00× | 2.00× |  | ≥ 3× |" in table
    assert (
        f"| {n}: inference speed-up vs 20-step MAML (MeLU-20), batches of 32 | 13.00× | 13.00× "
        "| 12.50× (12.00–13.25, 40 pairs) | ≥ 10× |" in table
    )
    png = efficiency.plot(rows, 32, tmp_path / "docs" / "efficiency.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tiny_measurements_in_process():
    args = argparse.Namespace(support=4, query=6, batch=3, rounds=2, calls=2, pairs=3)
    chosen = [
        m
        for m in efficiency.methods()
        if m.name in ("CMML (mean + dot + FiLM)", "MeLU-1 (1st order)", "MeLU-1 (2nd order)", "MeLU-5 (1st order)")
    ]
    rows = efficiency.run(args, chosen, in_process=True)
    assert [r["method"] for r in rows] == [m.name for m in chosen]
    for r in rows:
        assert (
            0 < r["train_ms_min"] <= r["train_ms"] and r["infer_ms_per_task_b3"] > 0 and r["infer_ms_per_task_b1"] > 0
        )
        assert r["train_peak_mb"] >= r["train_rss_before_mb"] > 0 and r["train_work_mb"] > 0
    # MAML inference is one computation for both orders: measured once and shared
    assert rows[2]["infer_shared_with"] == "MeLU-1 (1st order)"
    assert rows[2]["infer_ms_per_task_b3"] == rows[1]["infer_ms_per_task_b3"]
    # the CMML row is also timed against MeLU-5 in paired blocks (MeLU-20 is not selected here)
    paired = rows[0]["paired_b3"]
    assert list(paired) == ["MeLU-5 (1st order)"]
    p = paired["MeLU-5 (1st order)"]
    assert p["pairs"] == 3 and p["block"] >= 1 and 0 < p["q25"] <= p["median"] <= p["q75"]


def test_paired_ratio_compares_each_slow_call_with_the_fast_blocks_around_it(monkeypatch):
    clock, calls = [0.0], [0]
    monkeypatch.setattr(efficiency.time, "perf_counter", lambda: clock[0])
    block = 3

    def speed() -> float:
        """The machine slows down steadily within a pair (1, then 2 at the slow call, then 3) and more so
        from one pair to the next: only the mean of the blocks on both sides matches the slow call."""
        pair, position = divmod(calls[0], 2 * block + 1)
        return (1.0 + pair) * (1.0 if position < block else 2.0 if position == block else 3.0)

    def timed(seconds):
        def call():
            clock[0] += seconds * speed()
            calls[0] += 1

        return call

    result = efficiency.paired_ratio(timed(0.001), timed(0.010), pairs=4, block=block)
    assert result == {
        "median": pytest.approx(10.0),
        "q25": pytest.approx(10.0),
        "q75": pytest.approx(10.0),
        "pairs": 4,
        "block": 3,
    }
    assert calls[0] == 4 * (2 * block + 1)


def test_memory_worker_runs_in_its_own_process():
    args = argparse.Namespace(support=4, query=6, batch=3, rounds=1, calls=1, pairs=1)
    result = efficiency._worker(args, "--worker", "memory", "--method", "MeLU-1 (2nd order)", "--mode", "train")
    assert result["train_peak_mb"] >= result["train_rss_before_mb"] > 100  # a whole TensorFlow process
    assert result["train_work_mb"] > 0 and result["train_first_call_s"] > 0

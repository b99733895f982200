"""Retrieval diagnostics on hand-written retrieval logs."""
import json
from pathlib import Path

import pytest

from evaluation.retrieval_stats import age_histogram, retrieval_diagnostics, retrieval_events, reuse, similarity_over_time
from evaluation.run_folder import RunInfo

LOGS = {
    "0000-0": {"blocks": [{"query_frame": 17, "selected_frames": [[1, 4]], "similarities": [[0.9, 0.7]]},
                          {"query_frame": 20, "selected_frames": [[1, 7]], "similarities": [[0.8, 0.6]]}]},
    "0001-0": {"blocks": [{"query_frame": 17, "selected_frames": [[1]], "similarities": [[0.5]]}]},
}


def test_events_ages_reuse_and_similarity_by_hand():
    events = retrieval_events(LOGS)
    assert [(e["stem"], e["age"]) for e in events] == [("0000-0", 16), ("0000-0", 13), ("0000-0", 19), ("0000-0", 13),
                                                         ("0001-0", 16)]
    hist = age_histogram(events)
    assert hist["edges"][:2] == [0, 3] and sum(hist["counts"]) == 5
    assert hist["counts"][13 // 3] == 2 and hist["counts"][16 // 3] == 2 and hist["counts"][19 // 3] == 1
    used = reuse(events)  # frame 1 of video 0 twice; frames 4, 7 of video 0 and 1 of video 1 once
    assert used["times_retrieved"] == {"1": 3, "2": 1} and used["distinct_frames"] == 4 and used["max_times_retrieved"] == 2
    assert used["mean_times_retrieved"] == pytest.approx(5 / 4)
    sims = similarity_over_time(events)
    assert sims["query_frame"] == [17, 20] and sims["mean_similarity"] == pytest.approx([0.7, 0.7])


def test_random_retrieval_has_no_similarities_and_native_runs_no_diagnostics(tmp_path):
    log = {"blocks": [{"query_frame": 9, "selected_frames": [[2]], "similarities": None}]}
    assert similarity_over_time(retrieval_events({"a": log})) == {"query_frame": [], "mean_similarity": []}
    run = RunInfo(tmp_path, "r", "b", "m", 30, None, {}, ("0000-0",))
    assert retrieval_diagnostics(run) is None
    (tmp_path / "0000-0.retrieval.json").write_text(json.dumps(log))
    assert retrieval_diagnostics(run)["mean_age_frames"] == 7

import imageio.v2 as imageio

from inference_job.context_plot import context_points, plot_context, reencoded_points, segment_boundaries

LOG = [
    {"first_frame": 3, "scene": 0, "keys": [[0, 0, 16], [1, 1, 16], [2, 2, 16]]},
    {"first_frame": 15, "scene": 0, "keys": [[0, 0, 16], [None, 1, 16], [7, 1, 5], [9, 2, 11]]},
]


def test_points_pair_each_attended_frame_with_its_block_position_and_tokens():
    assert context_points(LOG) == ([3, 3, 3, 15, 15, 15], [0, 1, 2, 0, 7, 9], [0, 1, 2, 0, 1, 2], [16, 16, 16, 16, 5, 11])


def test_plot_is_written_as_png(tmp_path):
    for log in (LOG, []):
        path = tmp_path / "plot.png"
        plot_context(log, 30, path, "title")
        image = imageio.imread(path)
        assert image.shape == (500, 600, 4)
        assert image[..., :3].std() > 0  # something was drawn
        assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_switch_blocks_are_the_plotted_segment_boundaries(tmp_path):
    log = [
        {"first_frame": 0, "scene": 0, "switch": None, "keys": []},
        {"first_frame": 3, "scene": 1, "switch": {"cut": False}, "keys": [[0, 0, 16]]},
        {"first_frame": 6, "scene": 2, "switch": {"cut": True}, "keys": [[0, 0, 16]]},
    ]
    assert segment_boundaries(log) == [(3, 1, False), (6, 2, True)]
    plain, marked = tmp_path / "plain.png", tmp_path / "marked.png"
    plot_context([{**e, "switch": None} for e in log], 9, plain, "t")
    plot_context(log, 9, marked, "t")
    assert (imageio.imread(plain) != imageio.imread(marked)).any()  # the boundaries are drawn


SWITCH_LOG = [
    {"first_frame": 0, "scene": 0, "switch": None, "keys": [], "retrieval": None},
    {"first_frame": 3, "scene": 1, "switch": {"cut": False}, "keys": [[0, 0, 16]], "retrieval": {"reencoded_frames": []}},
    {"first_frame": 6, "scene": 1, "switch": None, "keys": [[0, 0, 16], [1, 0, 16]], "retrieval": {"reencoded_frames": [1, 2]}},
    {"first_frame": 9, "scene": 2, "switch": {"cut": False}, "keys": [[0, 0, 16]], "retrieval": {"reencoded_frames": [4]}},
]


def test_reencoded_entries_are_marked(tmp_path):
    assert reencoded_points(SWITCH_LOG) == ([6, 6, 9], [1, 2, 4])
    assert reencoded_points(LOG) == ([], [])
    unmarked = [{**e, "retrieval": e["retrieval"] and {"reencoded_frames": []}} for e in SWITCH_LOG]
    plot_context(SWITCH_LOG, 12, tmp_path / "marked.png", "title")
    plot_context(unmarked, 12, tmp_path / "plain.png", "title")
    marked, plain = imageio.imread(tmp_path / "marked.png"), imageio.imread(tmp_path / "plain.png")
    magenta = (marked[..., 0] > 200) & (marked[..., 1] < 80) & (marked[..., 2] > 200)
    assert magenta.sum() > 20 and not ((plain[..., 0] > 200) & (plain[..., 1] < 80) & (plain[..., 2] > 200)).any()

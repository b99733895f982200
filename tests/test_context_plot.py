import imageio.v2 as imageio

from inference_job.context_plot import context_points, plot_context, segment_boundaries

LOG = [
    {"first_frame": 3, "keys": [[0, 0, 16], [1, 1, 16], [2, 2, 16]]},
    {"first_frame": 15, "keys": [[0, 0, 16], [None, 1, 16], [7, 1, 5], [9, 2, 11]]},
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

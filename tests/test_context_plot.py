import imageio.v2 as imageio

from inference_job.context_plot import context_points, plot_context

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

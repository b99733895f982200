import imageio.v2 as imageio

from inference_job.retrieval_plot import plot_retrieval, retrieval_points

LOG = [
    {"query_frame": 17, "selected_frames": [[1]], "similarities": [[0.9]]},
    {"query_frame": 20, "selected_frames": [[4, 1]], "similarities": [[0.8, 0.5]]},
]


def test_points_pair_each_retrieved_frame_with_its_query_and_similarity():
    assert retrieval_points(LOG) == ([17, 20, 20], [1, 4, 1], [0.9, 0.8, 0.5])


def test_random_retrieval_has_no_similarities():
    log = [{**entry, "similarities": None} for entry in LOG]
    assert retrieval_points(log)[2] is None


def test_plot_is_written_as_png(tmp_path):
    for log in (LOG, [{**e, "similarities": None} for e in LOG], []):
        path = tmp_path / "plot.png"
        plot_retrieval(log, 30, path, "title")
        image = imageio.imread(path)
        assert image.shape == (500, 600, 4)
        assert image[..., :3].std() > 0  # something was drawn
        assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]

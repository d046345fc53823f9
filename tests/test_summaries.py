"""The view steps' writer: eager for a set's first writes, one compiled call
after; both write the same tags, steps and values."""

import numpy as np
import tensorflow as tf
from tensorboard.util import tensor_util

from conftest import read_tags
from siamese_research import summaries


def test_view_writer_writes_the_same_events_eagerly_and_compiled(tmp_path, monkeypatch):
    monkeypatch.setattr(summaries.ViewWriter, "COMPILE_AFTER", 2)
    writer = summaries.ViewWriter()
    rng = np.random.default_rng(0)
    grads = {step: rng.standard_normal(50) for step in range(1, 6)}
    with tf.summary.create_file_writer(str(tmp_path)).as_default() as w:
        for step, g in grads.items():  # steps 1-2 eager, 3-5 compiled
            writer(step, {"loss": step / 10, "branch_gradients/left_norm": np.float64(step)},
                   {"gradients/left/w": summaries.histogram_tensor(g)})
        writer(6, {"loss": 0.6})  # another set of tags: eager again
        w.flush()
    assert len(writer._compiled) == 1  # the compiled path was taken
    tags, acc = read_tags(str(tmp_path))
    assert tags["loss"] == [1, 2, 3, 4, 5, 6]
    assert tags["branch_gradients/left_norm"] == tags["gradients/left/w"] == [1, 2, 3, 4, 5]
    for event in acc.Tensors("loss"):
        assert np.isclose(tensor_util.make_ndarray(event.tensor_proto), event.step / 10)
    for event in acc.Tensors("gradients/left/w"):
        hist = tensor_util.make_ndarray(event.tensor_proto)
        assert hist.shape == (summaries.HISTOGRAM_BUCKETS, 3)
        assert hist[:, 2].sum() == 50  # every value binned
        np.testing.assert_allclose(hist[[0, -1], [0, 1]],
                                   [grads[event.step].min(), grads[event.step].max()])
    metadata = acc.SummaryMetadata("gradients/left/w")
    assert metadata.plugin_data.plugin_name == "histograms"

"""predict on image files, export to one file, rir_jax.load: all the run's own predictions."""
import concurrent.futures
import json

import numpy as np
import pytest
from flax import serialization
from PIL import Image

import rir_jax
from rir_jax import data, inference, loading
from trained_helpers import assert_one_line_exit_2, eval_lines, run_module, shared_run

NUM_IMAGES = 200


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_data):
  return shared_run(tmp_path_factory, shared_data)


@pytest.fixture(scope="module")
def mnist_test(shared_data):
  images, labels = data.load("mnist", "test", manual_dir=shared_data / "mnist")
  return images[:NUM_IMAGES], labels[:NUM_IMAGES]


@pytest.fixture(scope="module")
def pngs(mnist_test, tmp_path_factory):
  folder = tmp_path_factory.mktemp("pngs")
  for index, image in enumerate(mnist_test[0]):
    Image.fromarray(image[..., 0]).save(folder / f"{index:04d}.png")
  return folder


def _predict(*args):
  result = run_module("predict", *args)
  assert result.returncode == 0, result.stderr[-3000:]
  return [json.loads(line) for line in result.stdout.splitlines()]


def test_pngs_are_predicted_as_the_runs_own_eval_predicts_them(run, pngs, mnist_test):
  images, labels = mnist_test
  trained = loading.load_trained(run, "last")
  predicted = _predict(f"--workdir={run}", "--step=last", "--json", "--top_k=3", pngs)
  assert [p["file"] for p in predicted] == [str(pngs / f"{i:04d}.png") for i in range(NUM_IMAGES)]
  top1 = np.array([int(p["top_k"][0]["class"]) for p in predicted])
  # The training loop's own eval program counts the same examples right.
  totals = inference.split_totals(trained, images, labels, batch_size=256)
  assert np.sum(top1 == labels) == totals["correct"]
  # And each prediction is the eval's logits' argmax, with their softmax probabilities.
  logits = inference.logits(trained, images, batch_size=256).astype(np.float64)
  np.testing.assert_array_equal(top1, logits.argmax(axis=1))
  probs = np.exp(logits - logits.max(1, keepdims=True))
  probs /= probs.sum(1, keepdims=True)
  got = np.array([[c["probability"] for c in p["top_k"]] for p in predicted])
  np.testing.assert_allclose(got, -np.sort(-probs, axis=1)[:, :3], rtol=1e-5)
  assert len(set(top1)) > 1  # a model that says one class for all would prove little


def test_pictures_of_another_mode_and_size_are_converted_or_refused(run, mnist_test, tmp_path):
  image = mnist_test[0][0][..., 0]
  Image.fromarray(image).convert("RGB").save(tmp_path / "rgb.png")  # same pixels, 3 channels
  Image.fromarray(image).save(tmp_path / "gray.png")
  Image.fromarray(image).resize((56, 56)).save(tmp_path / "large.png")
  rgb, gray = _predict(f"--workdir={run}", "--json", tmp_path / "rgb.png", tmp_path / "gray.png")
  assert rgb["top_k"] == gray["top_k"]
  refused = run_module("predict", f"--workdir={run}", tmp_path / "large.png")
  assert_one_line_exit_2(refused, "56x56")
  (resized,) = _predict(f"--workdir={run}", "--json", "--resize", tmp_path / "large.png")
  assert len(resized["top_k"]) == 5


def test_predict_bad_input_is_one_line_exit_2(run, pngs, tmp_path):
  (tmp_path / "empty").mkdir()
  (tmp_path / "notes.png").write_text("not a picture")
  cases = [
      ([f"--workdir={run}", tmp_path / "missing.png"], "does not exist"),
      ([f"--workdir={run}", tmp_path / "empty"], "no image files"),
      ([f"--workdir={run}", tmp_path / "notes.png"], "not a readable image"),
      ([f"--workdir={run}", "--top_k=0", pngs], "--top_k"),
      ([f"--workdir={tmp_path}", pngs], "no model.json"),
      ([f"--workdir={run / 'config.json'}", pngs], "not a rir-jax export"),
      ([pngs], "--workdir"),
  ]
  with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    results = list(pool.map(lambda case: run_module("predict", *case[0]), cases))
  for (_, phrase), result in zip(cases, results):
    assert_one_line_exit_2(result, phrase)


def test_export_round_trip_gives_the_same_logits(run, mnist_test, tmp_path):
  out = tmp_path / "model.msgpack"
  result = run_module("export", f"--workdir={run}", f"--out={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  best_step = eval_lines(run)[-1]["best/step"]
  raw = serialization.msgpack_restore(out.read_bytes())  # the documented layout
  assert raw["format"] == "rir-jax-export" and raw["version"] == 1
  card = json.loads(raw["card"])
  assert card["step"] == best_step and card["preprocess"]["class_names"][7] == "7"
  assert set(raw) == {"format", "version", "card", "params", "batch_stats"}
  run.rename(tmp_path / "moved")  # the file needs no workdir
  try:
    model, variables, preprocess = rir_jax.load(out)
    from_workdir = rir_jax.load(tmp_path / "moved", step=best_step)
  finally:
    (tmp_path / "moved").rename(run)
  images = mnist_test[0][:32]
  np.testing.assert_array_equal(model.apply(variables, preprocess(images), train=False),
                                from_workdir[0].apply(from_workdir[1], from_workdir[2](images),
                                                      train=False))
  # The normalisation is the run's, stored when it started, not recomputed.
  saved = json.loads((run / "model.json").read_text())["preprocess"]
  assert preprocess.mean == tuple(saved["mean"]) and preprocess.std == tuple(saved["std"])


def test_export_and_load_bad_input(run, tmp_path):
  cases = [
      ([f"--workdir={run}", f"--out={tmp_path}"], "is a folder"),
      ([f"--workdir={run}", f"--out={tmp_path / 'no' / 'm.msgpack'}"], "does not exist"),
      ([f"--workdir={tmp_path / 'none'}", f"--out={tmp_path / 'm'}"], "not a folder"),
      ([f"--workdir={run}", f"--out={tmp_path / 'm'}", "--step=3"], "no checkpoint of step 3"),
  ]
  with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    results = list(pool.map(lambda case: run_module("export", *case[0]), cases))
  for (_, phrase), result in zip(cases, results):
    assert_one_line_exit_2(result, phrase)
  assert list(tmp_path.iterdir()) == []
  with pytest.raises(loading.LoadError, match="step"):
    rir_jax.load(run, step="soon")

"""Users' own picture files, as predict and image_folder read them: 16-bit, float, rotated by
EXIF, palette with transparency, oversized; converted right or refused in one line."""
import tarfile
import warnings

import numpy as np
import pytest
from PIL import ExifTags, Image

from rir_jax import data, predict
from rir_jax.data import pictures
from rir_jax.preprocess import ImageError, Preprocess

# Pixels no symmetry maps onto themselves: a wrong turn or flip shows.
ASYMMETRIC = np.arange(6 * 5 * 3, dtype=np.uint8).reshape(6, 5, 3) * 2


def _mnist_like(shape=(6, 5, 1)) -> Preprocess:
  return Preprocess(dataset="mnist", class_names=tuple("0123456789"), image_shape=shape,
                    mean=(0.1,), std=(0.3,))


def _rotated_file(path, array, orientation=6):
  """`array` saved as PNG with an EXIF orientation: 6 asks a viewer to turn it 90 degrees
  clockwise, so what shows is np.rot90(array, -1)."""
  exif = Image.Exif()
  exif[ExifTags.Base.Orientation] = orientation
  Image.fromarray(array).save(path, exif=exif)
  return path


def test_sixteen_bit_pixels_are_scaled_not_clipped(tmp_path):
  eight = np.arange(30, dtype=np.uint8).reshape(6, 5) * 8
  Image.fromarray(eight.astype(np.uint16) * 257).save(tmp_path / "deep.png")  # 16-bit PNG
  with Image.open(tmp_path / "deep.png") as image:
    assert image.mode.startswith("I;16")
    np.testing.assert_array_equal(np.asarray(pictures.eight_bit(image, "L")), eight)
    np.testing.assert_array_equal(np.asarray(pictures.eight_bit(image, "RGB")),
                                  np.stack([eight] * 3, axis=-1))
  as_int32 = Image.fromarray(eight.astype(np.int32) * 257)  # how older Pillows open it
  assert as_int32.mode == "I"
  np.testing.assert_array_equal(np.asarray(pictures.eight_bit(as_int32, "L")), eight)
  with pytest.raises(ValueError, match="outside 0..65535"):
    pictures.eight_bit(Image.fromarray(np.full((2, 2), 70000, np.int32)), "L")


def test_pictures_are_turned_upright_as_exif_asks(tmp_path):
  with Image.open(_rotated_file(tmp_path / "photo.png", ASYMMETRIC)) as image:
    assert not pictures.is_upright(image)
    upright = np.asarray(pictures.eight_bit(image, "RGB"))
  np.testing.assert_array_equal(upright, np.rot90(ASYMMETRIC, -1))
  Image.fromarray(ASYMMETRIC).save(tmp_path / "plain.png")
  with Image.open(tmp_path / "plain.png") as image:
    assert pictures.is_upright(image)
    np.testing.assert_array_equal(np.asarray(pictures.eight_bit(image, "RGB")), ASYMMETRIC)


def test_palette_transparency_is_read_without_a_warning(tmp_path):
  palette = Image.fromarray(ASYMMETRIC).quantize(8)
  # An alpha per palette entry: Pillow warns if such a picture is converted to RGB directly.
  palette.save(tmp_path / "p.png", transparency=bytes([0, 128] + [255] * 6))
  with Image.open(tmp_path / "p.png") as image, warnings.catch_warnings():
    warnings.simplefilter("error")
    got = np.asarray(pictures.eight_bit(image, "RGB"))
    np.testing.assert_array_equal(got, np.asarray(image.convert("RGBA").convert("RGB")))


def test_predict_reads_deep_and_rotated_pictures_as_viewers_show_them(tmp_path):
  digit = np.arange(30, dtype=np.uint8).reshape(6, 5) * 8
  Image.fromarray(digit).save(tmp_path / "a.png")
  Image.fromarray(digit.astype(np.uint16) * 257).save(tmp_path / "b.png")
  _rotated_file(tmp_path / "c.png", np.rot90(digit, 1))  # shows as `digit`
  files = [tmp_path / n for n in ("a.png", "b.png", "c.png")]
  images = predict.read_images(files, _mnist_like(), resize=False)
  assert images.shape == (3, 6, 5, 1)
  for image in images:
    np.testing.assert_array_equal(image[..., 0], digit)


@pytest.mark.parametrize("write, phrase", [
    (lambda path: Image.fromarray(np.zeros((6, 5), np.float32)).save(path.with_suffix(".tif")),
     "floating point"),
    (lambda path: Image.fromarray(np.zeros((6, 5, 3), np.uint8)).convert("LAB").save(
        path.with_suffix(".tif")), "LAB"),
    (lambda path: path.with_suffix(".tif").write_bytes(b"II*\0" + b"\xff" * 40),
     "not a readable image"),
])
def test_predict_refuses_unconvertible_pictures_naming_the_file(write, phrase, tmp_path):
  write(tmp_path / "bad")
  with pytest.raises(ImageError, match=phrase) as refused:
    predict.read_images([tmp_path / "bad.tif"], _mnist_like(), resize=False)
  assert "bad.tif" in str(refused.value) and "\n" not in str(refused.value)


def test_pillows_warnings_are_one_line_naming_the_file_and_none_before_a_refusal(
    tmp_path, caplog, monkeypatch):
  """A corrupt EXIF block: Pillow warns (two lines naming its own source) and reads on."""
  readable = [tmp_path / f"readable{i}.jpg" for i in range(3)]
  unreadable = tmp_path / "unreadable.tif"
  for path in readable:
    Image.fromarray(np.zeros((6, 5), np.uint8)).save(
        path, exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x05\x00")  # 5 entries, none there
  unreadable.write_bytes(b"II*\0" + b"\xff" * 40)
  monkeypatch.setattr(pictures, "_told", set())  # as in a fresh process
  with warnings.catch_warnings(record=True) as escaped:
    warnings.simplefilter("always")
    assert predict.read_images(readable, _mnist_like(), resize=False).shape == (3, 6, 5, 1)
    with pytest.raises(ImageError, match="unreadable.tif is not a readable image"):
      predict.read_images([unreadable], _mnist_like(), resize=False)
    with pictures.warnings_named("any.png"):
      warnings.warn("another library's", DeprecationWarning)
  assert [str(w.message) for w in escaped] == ["another library's"]  # passed on as it was
  told = [r.getMessage() for r in caplog.records if r.name == "rir_jax.data.pictures"]
  # Once, naming the first picture: a folder of a camera's photos is not a page of them.
  assert len(told) == 1 and told[0].startswith(f"{readable[0]}: Corrupt EXIF data"), told


def test_predict_refuses_a_decompression_bomb(tmp_path, monkeypatch):
  Image.fromarray(np.zeros((60, 50), np.uint8)).save(tmp_path / "huge.png")
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 3,000 pixels is over twice that
  with pytest.raises(ImageError, match="huge.png is not a readable image.*DecompressionBomb"):
    predict.read_images([tmp_path / "huge.png"], _mnist_like(), resize=True)


def _plain_tree(tree, *, beside=lambda folder: None):
  """train/ and test/ with classes a and b, one plain.png each; `beside(folder)` adds to
  every class folder and split folder."""
  for split in ("train", "test"):
    for label in ("a", "b"):
      (tree / split / label).mkdir(parents=True)
      Image.fromarray(ASYMMETRIC).save(tree / split / label / "plain.png")
      beside(tree / split / label)
    beside(tree / split)
  return tree


def test_image_folder_stores_pictures_upright_and_in_eight_bits(tmp_path):
  tree = _plain_tree(tmp_path / "tree")
  # Stored 5x6, shown 6x5 like the others: the tree has one size once turned upright.
  _rotated_file(tree / "train" / "b" / "turned.png", np.rot90(ASYMMETRIC, 1))
  gray = ASYMMETRIC[..., 0]
  Image.fromarray(gray.astype(np.uint16) * 257).save(tree / "train" / "b" / "deep.png")
  dataset = data.load_dataset("image_folder", data_dir=tmp_path / "tfds", manual_dir=tree)
  plain_a, deep, plain_b, turned = dataset.train_images  # by class, then file name
  np.testing.assert_array_equal(plain_a, ASYMMETRIC)
  np.testing.assert_array_equal(plain_b, ASYMMETRIC)
  np.testing.assert_array_equal(turned, ASYMMETRIC)
  np.testing.assert_array_equal(deep, np.stack([gray] * 3, axis=-1))


def _hidden_entries(folder):
  """What macOS and Jupyter leave in folders of pictures: none of it a picture."""
  (folder / "._plain.png").write_bytes(b"\0\5\x16\7 AppleDouble metadata")
  (folder / ".ipynb_checkpoints").mkdir()
  (folder / ".ipynb_checkpoints" / "plain-checkpoint.png").write_bytes(b"not a picture")


def test_predict_searches_folders_for_visible_picture_files(tmp_path):
  Image.fromarray(ASYMMETRIC).save(tmp_path / "plain.png")
  (tmp_path / "more.png").mkdir()  # a folder with a picture's name is searched, not opened
  Image.fromarray(ASYMMETRIC).save(tmp_path / "more.png" / "inner.png")
  _hidden_entries(tmp_path)
  assert predict.image_files([tmp_path]) == [tmp_path / "more.png" / "inner.png",
                                             tmp_path / "plain.png"]


def test_image_folder_skips_hidden_files_and_class_folders(tmp_path):
  # Hidden files in every class folder, and a hidden class folder in each split.
  tree = _plain_tree(tmp_path / "tree", beside=_hidden_entries)
  (tmp_path / "archived").mkdir()
  with tarfile.open(tmp_path / "archived" / "tree.tar", "w") as tar:
    tar.add(tree, arcname="tree")
  for manual_dir in (tree, tmp_path / "archived"):
    dataset = data.load_dataset("image_folder", data_dir=tmp_path / "tfds", manual_dir=manual_dir)
    assert dataset.num_classes == 2 and dataset.train_labels.tolist() == [0, 1]

"""What `python -m rir_jax.evaluate` reports: accuracies, per-class results, a confusion image."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

TOP5_MIN_CLASSES = 6  # top-5 says nothing with 5 classes or fewer
_CELL = 28            # pixels per confusion cell, for up to ~20 classes
_MARGIN = 56          # room for the class names


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
  """counts[true, predicted]."""
  return np.bincount(labels * num_classes + predicted,
                     minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
  top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
  return float(np.mean(np.any(top == labels[:, None], axis=1)))


def report(logits: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
  """Per-class accuracy and the confusion matrix (and top-5 where classes > 5)."""
  num_classes = len(class_names)
  confusion = confusion_matrix(labels, logits.argmax(axis=1), num_classes)
  per_class = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
  result = {"per_class_accuracy": dict(zip(class_names, map(float, per_class))),
            "confusion_matrix": confusion.tolist()}
  if num_classes >= TOP5_MIN_CLASSES:
    result["top5_accuracy"] = top_k_accuracy(logits, labels, 5)
  return result


def confusion_image(confusion: np.ndarray, class_names: list[str], title: str) -> Image.Image:
  """Rows: true class, columns: predicted; darker = more of the row's examples."""
  n = len(class_names)
  cell = max(4, min(_CELL, 560 // n))
  size = _MARGIN + n * cell
  image = Image.new("RGB", (size + 8, size + 24), "white")
  draw = ImageDraw.Draw(image)
  draw.text((4, 4), title, fill="black")
  fraction = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
  for true in range(n):
    for guess in range(n):
      shade = int(255 * (1 - fraction[true, guess]))
      x, y = _MARGIN + guess * cell, 24 + _MARGIN + true * cell
      draw.rectangle([x, y, x + cell - 1, y + cell - 1],
                     fill=(shade, shade, 255) if true == guess else (255, shade, shade))
  if cell >= 12:  # names fit beside and above the cells
    for index, name in enumerate(class_names):
      draw.text((2, 24 + _MARGIN + index * cell + cell // 3), name[:8], fill="black")
      draw.text((_MARGIN + index * cell + 2, 24 + _MARGIN - 12), name[:3], fill="black")
  draw.text((_MARGIN, 24 + _MARGIN - 26), "predicted ->   (rows: true class)", fill="black")
  return image

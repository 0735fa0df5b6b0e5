"""Masks, pooling and the completion task split: exact values on small images."""

from __future__ import annotations

import pytest
import torch

from pyro_vae import ConfigError, DataError
from pyro_vae.completion import build_task, same_task
from pyro_vae.masks import (
    MaskSpec, average_pool, center_mask, check_mask, parse_mask, pooled_shape, quadrant_mask, random_mask, rows_mask,
)


def grid(mask, shape=(4, 4)):
    return mask.reshape(shape).int().tolist()


def test_quadrants_follow_pyros_tutorial_bottom_left_then_top_left_then_top_right():
    assert grid(quadrant_mask((4, 4), 1)) == [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]]
    assert grid(quadrant_mask((4, 4), 2)) == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]]
    assert grid(quadrant_mask((4, 4), 3)) == [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]]
    # odd sizes split at H // 2, W // 2; channels share the spatial mask
    assert grid(quadrant_mask((3, 3), 1), (3, 3)) == [[0, 0, 0], [1, 0, 0], [1, 0, 0]]
    two = quadrant_mask((2, 4, 4), 1).reshape(2, 4, 4)
    assert torch.equal(two[0], two[1]) and int(two.sum()) == 8


def test_random_center_and_rows_masks_hide_exactly_what_they_say():
    m = random_mask(100, 0.3, seed=1)
    assert int((~m).sum()) == 30 and torch.equal(m, random_mask(100, 0.3, seed=1))
    assert not torch.equal(m, random_mask(100, 0.3, seed=2))
    assert grid(center_mask((4, 4))) == [[1, 1, 1, 1], [1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]]
    assert grid(rows_mask((4, 4), 0.25)) == [[1] * 4, [1] * 4, [1] * 4, [0] * 4]


def test_masks_that_hide_nothing_or_everything_and_quadrants_on_non_images_are_refused():
    with pytest.raises(ConfigError, match="hides nothing"):
        random_mask(10, 0.0)
    with pytest.raises(ConfigError, match="hides every feature"):
        random_mask(10, 1.0)
    with pytest.raises(ConfigError, match="hides every feature"):
        rows_mask((4, 4), 1.0)
    with pytest.raises(ConfigError, match="hides nothing"):
        check_mask(torch.ones(3, dtype=torch.bool))
    with pytest.raises(DataError, match="mask 'quadrants' needs image data.*use mask 'random'"):
        quadrant_mask(None, 1)
    with pytest.raises(ConfigError, match="observed"):
        quadrant_mask((4, 4), 4)
    with pytest.raises(DataError, match="image_shape"):
        MaskSpec("quadrants", observed=1).build(10, (2, 4))


def test_average_pooling_is_the_block_mean_and_needs_a_dividing_factor():
    x = torch.arange(16.0).reshape(1, 16)
    assert average_pool(x, (4, 4), 2).tolist() == [[2.5, 4.5, 10.5, 12.5]]
    assert average_pool(x, (4, 4), 4).tolist() == [[7.5]]
    batch = torch.rand(3, 5, 2 * 8 * 8)
    pooled = average_pool(batch, (2, 8, 8), 4)
    assert pooled.shape == (3, 5, 8) and torch.allclose(pooled.mean(-1), batch.mean(-1), atol=1e-6)
    assert pooled_shape((2, 8, 8), 4) == (2, 2, 2)
    with pytest.raises(DataError, match="factor 4 does not divide the image size 6 x 6.*2"):
        average_pool(torch.zeros(1, 36), (6, 6), 4)
    with pytest.raises(ConfigError, match="factor=3 is not valid; choose one of: 2, 4"):
        average_pool(torch.zeros(1, 36), (6, 6), 3)


def test_the_task_splits_and_puts_back():
    x = torch.arange(16.0).reshape(1, 16)
    t = build_task("inpaint", 16, (4, 4), mask="quadrants", observed=1)
    c, y = t.condition(x), t.target(x)
    assert c.tolist() == [[8.0, 9.0, 12.0, 13.0]] and y.shape == (1, 12)
    assert torch.equal(t.complete(x, y), x)
    filled = t.complete(x, torch.zeros(5, 1, 12))  # S completions broadcast over rows
    assert filled.shape == (5, 1, 16) and float(filled.sum()) == 5 * (8 + 9 + 12 + 13)
    s = build_task("superres", 16, (4, 4), factor=2)
    assert s.condition(x).tolist() == [[2.5, 4.5, 10.5, 12.5]] and torch.equal(s.target(x), x)
    with pytest.raises(ConfigError, match="trained for 'inpaint quadrants:1' and cannot complete 'superres"):
        same_task(t, s)
    same_task(t, build_task("inpaint", 16, (4, 4), mask="quadrants", observed=1))


def test_command_line_masks_parse_or_name_the_forms():
    assert parse_mask("quadrants:2") == ("inpaint", MaskSpec("quadrants", observed=2))
    assert parse_mask("random:0.5") == ("inpaint", MaskSpec("random", fraction=0.5))
    assert parse_mask("downsample:4") == ("superres", 4)
    assert parse_mask("center") == ("inpaint", MaskSpec("center"))
    for bad in ("quadrant:1", "random:half", "downsample", ""):
        with pytest.raises(ConfigError, match="--mask"):
            parse_mask(bad)

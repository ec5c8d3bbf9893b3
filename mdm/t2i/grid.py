"""PNG grids of generated samples: captions under the images, a green / red frame for the attribute check."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

GREEN, RED, GREY = (60, 200, 90), (230, 60, 60), (110, 110, 110)


def _font(size: int = 11):
    from PIL import ImageFont  # deferred: PIL, only when a grid is drawn

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def save_grid(images, path: str | Path, captions: Sequence[str] | None = None, ok: Sequence[bool | None] | None = None,
              cols: int = 8, scale: int = 4, row_labels: Sequence[str] | None = None, title: str | None = None) -> Path:
    """Tile uint8 [N, H, W, 3] images (row-major, `cols` per row), each upscaled `scale` x (nearest), with its
    caption below and a frame coloured by `ok` (green True, red False, grey None). `row_labels` prefix rows."""
    from PIL import Image, ImageDraw  # deferred: PIL, only when a grid is drawn

    # deferred: mdm.t2i.image_tokenizer imports torch; this module is torch-free
    from mdm.t2i.image_tokenizer import as_uint8_batch

    imgs = as_uint8_batch(images)
    n, h, w = imgs.shape[:3]
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    font = _font()
    tile_w, tile_h = w * scale + 8, h * scale + 8
    text_h = 42 if captions is not None else 0
    label_w = 140 if row_labels else 0
    title_h = 22 if title else 0
    canvas = Image.new("RGB", (label_w + cols * tile_w, title_h + rows * (tile_h + text_h)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 4), title, fill=(0, 0, 0), font=font)
    for i in range(n):
        r, c = divmod(i, cols)
        x0, y0 = label_w + c * tile_w, title_h + r * (tile_h + text_h)
        flag = ok[i] if ok is not None else None
        draw.rectangle([x0 + 1, y0 + 1, x0 + tile_w - 2, y0 + tile_h - 2],
                       fill=GREY if flag is None else (GREEN if flag else RED))
        canvas.paste(Image.fromarray(imgs[i]).resize((w * scale, h * scale), Image.NEAREST), (x0 + 4, y0 + 4))
        if captions is not None:
            lines = textwrap.wrap(captions[i], width=max(8, tile_w // 6))[:3]
            draw.multiline_text((x0 + 2, y0 + tile_h), "\n".join(lines), fill=(0, 0, 0), font=font, spacing=1)
    for r, label in enumerate(row_labels or []):
        draw.text((4, title_h + r * (tile_h + text_h) + tile_h // 2 - 6), str(label), fill=(0, 0, 0), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path

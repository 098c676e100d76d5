"""Tests for caso_cli.io.images. Every image is built in tmp_path; nothing touches the network."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from caso_cli.errors import InputError, UsageError
from caso_cli.io import images as imageio
from caso_cli.io.images import fit_image, load_image, parse_size, to_pil, to_tensor
from caso_cli.io.png import read_png_metadata, save_png

RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)


def close_to(pixel, expected, tol=12):
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, expected, strict=True))


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def patched_png(tmp_path: Path, width: int, height: int) -> Path:
    """A valid small PNG whose IHDR claims width x height (CRC fixed up)."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), RED).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path = tmp_path / "bomb.png"
    path.write_bytes(bytes(data))
    return path


# ---------------------------------------------------------------------------------------------
# reading: modes and formats


def test_module_import_does_not_import_torch_or_numpy():
    code = (
        "import sys, caso_cli.io.images; "
        "bad = [m for m in ('torch', 'numpy') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_exif_orientation_applied(tmp_path):
    # stored 40x20, red top-left quadrant; orientation 6 = rotate 90 degrees clockwise to display
    img = Image.new("RGB", (40, 20), BLUE)
    img.paste(RED, (0, 0, 20, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    img.save(path, "JPEG", exif=exif.tobytes(), quality=95)

    out = load_image(path)
    assert out.mode == "RGB"
    assert out.size == (20, 40)
    assert close_to(out.getpixel((17, 2)), RED)  # stored top-left is now top-right
    assert close_to(out.getpixel((2, 2)), BLUE)
    assert close_to(out.getpixel((17, 37)), BLUE)


def test_rgba_composited_on_white(tmp_path):
    img = Image.new("RGBA", (4, 1), (0, 0, 0, 255))
    img.putpixel((1, 0), (0, 0, 0, 0))
    img.putpixel((2, 0), (0, 0, 0, 128))
    img.putpixel((3, 0), (255, 0, 0, 0))  # colour under full transparency must not show
    path = tmp_path / "alpha.png"
    img.save(path)

    out = load_image(path)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (0, 0, 0)
    assert out.getpixel((1, 0)) == WHITE
    assert close_to(out.getpixel((2, 0)), (127, 127, 127), tol=1)
    assert out.getpixel((3, 0)) == WHITE


def test_la_composited_on_white(tmp_path):
    img = Image.new("LA", (2, 1), (0, 255))
    img.putpixel((1, 0), (0, 0))
    path = tmp_path / "la.png"
    img.save(path)
    out = load_image(path)
    assert [out.getpixel((x, 0)) for x in range(2)] == [(0, 0, 0), WHITE]


def test_palette_transparency_becomes_white(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    img.putpixel((0, 0), 0)  # green, marked transparent
    img.putpixel((1, 0), 1)  # blue, opaque
    path = tmp_path / "palette.png"
    img.save(path, transparency=0)

    out = load_image(path)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == WHITE
    assert out.getpixel((1, 0)) == BLUE


def test_16_bit_png_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 32768, 65535, 257 * 100]], dtype=np.uint16)
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    path = tmp_path / "deep.png"
    img.save(path)

    out = load_image(path)
    assert out.mode == "RGB"
    values = [out.getpixel((x, 0)) for x in range(4)]
    assert values[0] == (0, 0, 0)
    assert values[1] in ((127, 127, 127), (128, 128, 128))
    assert values[2] == (255, 255, 255)
    assert values[3] == (100, 100, 100)


@pytest.mark.parametrize(
    ("mode", "values", "expected"),
    [
        ("I;16B", [0, 65535], [0, 255]),
        ("I", [0, 65535], [0, 255]),
        ("I", [0, 200], [0, 200]),
        ("F", [0.0, 1.0], [0, 255]),
    ],
)
def test_deep_modes_scaled(mode, values, expected):
    img = Image.new(mode, (2, 1))
    for x, v in enumerate(values):
        img.putpixel((x, 0), v)
    out = imageio.to_rgb(img)
    assert [out.getpixel((x, 0))[0] for x in range(2)] == expected


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, "JPEG", quality=95)
    out = load_image(path)
    assert out.mode == "RGB"
    assert close_to(out.getpixel((8, 8)), RED)


def test_grayscale_becomes_rgb(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("L", (3, 2), 77).save(path)
    out = load_image(path)
    assert out.mode == "RGB"
    assert out.size == (3, 2)
    assert out.getpixel((1, 1)) == (77, 77, 77)


@pytest.mark.parametrize(
    ("suffix", "options"),
    [
        pytest.param(
            ".webp",
            {"lossless": True},
            marks=pytest.mark.skipif(not features.check("webp"), reason="no WebP support"),
        ),
        (".bmp", {}),
        (".tiff", {}),
        (".png", {}),
    ],
)
def test_lossless_format_round_trip(tmp_path, suffix, options):
    img = noise(24, 16)
    path = tmp_path / f"img{suffix}"
    img.save(path, **options)
    out = load_image(path)
    assert out.mode == "RGB"
    assert out.size == (24, 16)
    assert np.array_equal(np.asarray(out), np.asarray(img))


def test_animated_gif_gives_first_frame(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (8, 8), colour) for colour in (RED, BLUE, (0, 255, 0))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 3
    out = load_image(path)
    assert out.mode == "RGB"
    assert out.getpixel((4, 4)) == RED


def test_loaded_image_is_detached_from_file(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (4, 4), RED).save(path)
    out = load_image(path)
    os.remove(path)  # works on every OS only if the file was closed
    assert out.getpixel((0, 0)) == RED
    assert out.copy().size == (4, 4)


# ---------------------------------------------------------------------------------------------
# reading: failures


def _input_error(path) -> str:
    with pytest.raises(InputError) as info:
        load_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    assert "Traceback" not in message
    return message


@pytest.mark.parametrize(("suffix", "fmt"), [(".jpg", "JPEG"), (".png", "PNG")])
def test_truncated_image(tmp_path, suffix, fmt):
    buf = io.BytesIO()
    noise(64, 64).save(buf, fmt)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    message = _input_error(path)
    assert "truncated" in message or "corrupt" in message


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert "empty" in _input_error(path)


def test_text_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    assert "not an image" in _input_error(path)


def test_directory(tmp_path):
    path = tmp_path / "dir.png"
    path.mkdir()
    assert "directory" in _input_error(path)


def test_missing_file(tmp_path):
    assert "no such file" in _input_error(tmp_path / "nope.jpg")


def test_permission_denied(tmp_path, monkeypatch):
    path = tmp_path / "secret.png"
    Image.new("RGB", (2, 2)).save(path)

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # root ignores chmod, so deny at the module's open() instead
    monkeypatch.setattr(imageio, "open", deny, raising=False)
    assert "permission denied" in _input_error(path)


def test_header_over_pillow_bomb_limit(tmp_path):
    path = patched_png(tmp_path, 30000, 30000)
    message = _input_error(path)
    assert f"over the {imageio.MAX_PIXELS // 1_000_000} megapixel limit" in message


def test_header_over_own_limit_refused_before_decoding(tmp_path):
    # 9000x9000 = 81 Mpx: over our 64 Mpx limit, under Pillow's bomb limit; the data is 8x8 only,
    # so a decode attempt would say "truncated" instead
    path = patched_png(tmp_path, 9000, 9000)
    message = _input_error(path)
    assert message == f"{path}: image is 9000x9000, over the 64 megapixel limit"


def test_pixel_limit_read_at_call_time(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (2000, 1000), RED).save(path)
    monkeypatch.setattr(imageio, "MAX_PIXELS", 1_000_000)
    assert _input_error(path) == f"{path}: image is 2000x1000, over the 1 megapixel limit"


def test_symlink_loop(tmp_path):
    os.symlink(tmp_path / "b.png", tmp_path / "a.png")
    os.symlink(tmp_path / "a.png", tmp_path / "b.png")
    assert _input_error(tmp_path / "a.png") == f"{tmp_path / 'a.png'}: symbolic link loop"


def test_one_pixel_image_is_read_and_fitted(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), RED).save(path)
    img = load_image(path)
    assert img.size == (1, 1)
    fitted = fit_image(img, 16)
    assert fitted.size == (16, 16) and close_to(fitted.getpixel((8, 8)), RED)


def test_non_utf8_file_name_reads_and_is_recorded_escaped(tmp_path):
    name = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9.png")  # latin-1 bytes: not UTF-8
    Image.new("RGB", (4, 4), BLUE).save(name)
    assert load_image(name).getpixel((0, 0)) == BLUE
    out = Path(name).with_suffix(".out.png")
    save_png(load_image(name), out, {"caso:input": name})
    assert read_png_metadata(out)["caso:input"].endswith("caf\\xe9.png")
    assert sorted(os.listdir(os.fsencode(str(tmp_path)))) == [b"caf\xe9.out.png", b"caf\xe9.png"]


# ---------------------------------------------------------------------------------------------
# sizes and resizing


def halves(width: int, height: int) -> Image.Image:
    """Left half red, right half blue."""
    img = Image.new("RGB", (width, height), BLUE)
    img.paste(RED, (0, 0, width // 2, height))
    return img


def test_fit_crop_covers_and_centres():
    out = fit_image(halves(100, 50), 64)
    assert out.size == (64, 64)
    assert out.mode == "RGB"
    assert close_to(out.getpixel((2, 32)), RED)
    assert close_to(out.getpixel((61, 32)), BLUE)
    assert close_to(out.getpixel((2, 0)), RED)  # no padding anywhere


def test_fit_crop_cuts_the_sides():
    # 200x50 red|blue with a green band at x 85..115: cropping to 64x64 keeps x 75..125 only
    img = halves(200, 50)
    img.paste((0, 255, 0), (85, 0, 115, 50))
    out = fit_image(img, (64, 64), mode="crop")
    assert out.size == (64, 64)
    assert close_to(out.getpixel((32, 32)), (0, 255, 0))
    assert close_to(out.getpixel((1, 32)), RED, tol=40)
    assert close_to(out.getpixel((62, 32)), BLUE, tol=40)


def test_fit_pad_uses_white_and_keeps_aspect():
    out = fit_image(Image.new("RGB", (100, 50), (0, 0, 0)), (64, 64), mode="pad")
    assert out.size == (64, 64)
    assert out.getpixel((32, 0)) == WHITE
    assert out.getpixel((32, 63)) == WHITE
    assert out.getpixel((32, 32)) == (0, 0, 0)
    assert out.getpixel((0, 32)) == (0, 0, 0)  # full width used


def test_fit_stretch():
    out = fit_image(halves(100, 50), (64, 128), mode="stretch")
    assert out.size == (64, 128)
    assert close_to(out.getpixel((2, 0)), RED)
    assert close_to(out.getpixel((61, 127)), BLUE)


def test_fit_same_size_is_copy_and_non_rgb_converted():
    img = Image.new("RGB", (16, 8), RED)
    out = fit_image(img, (16, 8))
    assert out is not img and out.tobytes() == img.tobytes()
    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    assert fit_image(rgba, 8, "pad").getpixel((4, 4)) == WHITE


@pytest.mark.parametrize("size", [63, (64, 60), 0, (-8, 8)])
def test_fit_rejects_sizes_not_multiple_of_8(size):
    with pytest.raises(UsageError, match="multiple"):
        fit_image(Image.new("RGB", (8, 8)), size)


def test_fit_rejects_unknown_mode():
    with pytest.raises(UsageError, match="crop, pad, stretch"):
        fit_image(Image.new("RGB", (8, 8)), 16, mode="zoom")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512", (512, 512)), ("512x768", (512, 768)), ("768X512", (768, 512)), (" 64 x 8 ", (64, 8))],
)
def test_parse_size_good(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "expected N or WxH"),
        ("abc", "expected N or WxH"),
        ("512x", "expected N or WxH"),
        ("512x768x3", "expected N or WxH"),
        ("-512", "expected N or WxH"),
        ("1.5", "expected N or WxH"),
        ("0", "positive multiples of 8"),
        ("510", "multiples of 8 (e.g. 512x512)"),
        ("512x0", "positive multiples of 8"),
        ("512x770", "multiples of 8 (e.g. 512x768)"),
    ],
)
def test_parse_size_bad(text, fragment):
    with pytest.raises(UsageError) as info:
        parse_size(text)
    assert fragment in str(info.value)
    assert repr(text) in str(info.value)


# ---------------------------------------------------------------------------------------------
# tensors


def test_tensor_round_trip_exact():
    import torch

    images = [noise(16, 8, seed=1), noise(16, 8, seed=2)]
    images[0].putpixel((0, 0), (0, 128, 255))
    t = to_tensor(images)
    assert t.shape == (2, 3, 8, 16)
    assert t.dtype == torch.float32
    assert float(t.min()) >= -1.0 and float(t.max()) <= 1.0
    assert torch.allclose(t[0, :, 0, 0], torch.tensor([-1.0, 128 / 127.5 - 1, 1.0]), atol=1e-6)

    back = to_pil(t)
    assert len(back) == 2
    for original, restored in zip(images, back, strict=True):
        assert restored.mode == "RGB"
        assert np.array_equal(np.asarray(restored), np.asarray(original))


def test_to_tensor_single_image_and_to_pil_3d():
    img = noise(8, 8, seed=3)
    t = to_tensor(img)
    assert t.shape == (1, 3, 8, 8)
    (restored,) = to_pil(t[0])
    assert np.array_equal(np.asarray(restored), np.asarray(img))


def test_to_pil_clamps_and_rounds():
    import torch

    t = torch.tensor([2.0, -3.0, 0.0, 0.004, float("nan")]).reshape(1, 1, 1, 5).expand(1, 3, 1, 5)
    (img,) = to_pil(t)
    assert [img.getpixel((x, 0))[0] for x in range(5)] == [255, 0, 128, 128, 128]


def test_tensor_errors():
    import torch

    with pytest.raises(ValueError, match="differ in size"):
        to_tensor([Image.new("RGB", (8, 8)), Image.new("RGB", (16, 8))])
    with pytest.raises(ValueError, match="no images"):
        to_tensor([])
    with pytest.raises(ValueError, match="expected a"):
        to_pil(torch.zeros(1, 4, 8, 8))


# ---------------------------------------------------------------------------------------------
# writing


def test_save_png_metadata_round_trip(tmp_path):
    path = tmp_path / "out" / "nested" / "result.png"  # parents are created
    meta = {"prompt": "a cat", "caption": "café ✓", "seed": 42, "params": {"steps": 30}}
    returned = save_png(noise(8, 8), path, metadata=meta)
    assert returned == path
    assert read_png_metadata(path) == {
        "prompt": "a cat",
        "caption": "café ✓",
        "seed": "42",
        "params": '{"steps": 30}',
    }
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(noise(8, 8)))
    assert [p.name for p in path.parent.iterdir()] == ["result.png"]  # no temp file left


def test_save_png_long_metadata_compressed(tmp_path):
    path = tmp_path / "long.png"
    save_png(Image.new("RGB", (8, 8)), path, metadata={"log": "x" * 5000})
    assert read_png_metadata(path) == {"log": "x" * 5000}
    assert path.stat().st_size < 2000


def test_save_png_refuses_overwrite(tmp_path):
    path = tmp_path / "keep.png"
    save_png(Image.new("RGB", (8, 8), RED), path, metadata={"v": "1"})
    before = path.read_bytes()
    with pytest.raises(InputError) as info:
        save_png(Image.new("RGB", (8, 8), BLUE), path, metadata={"v": "2"})
    assert str(info.value) == f"{path}: exists (use --overwrite)"
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]


def test_save_png_overwrite(tmp_path):
    path = tmp_path / "replace.png"
    save_png(Image.new("RGB", (8, 8), RED), path, metadata={"v": "1"})
    save_png(Image.new("RGB", (8, 8), BLUE), path, metadata={"v": "2"}, overwrite=True)
    assert load_image(path).getpixel((0, 0)) == BLUE
    assert read_png_metadata(path) == {"v": "2"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replace.png"]


def test_save_png_failure_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "fail.png"

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(InputError, match="cannot write"):
        save_png(Image.new("RGB", (8, 8)), path)
    assert list(tmp_path.iterdir()) == []


def test_save_png_converts_cmyk(tmp_path):
    path = save_png(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), tmp_path / "c.png")
    assert load_image(path).getpixel((0, 0)) == RED


def test_read_png_metadata_errors(tmp_path):
    jpg = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8)).save(jpg)
    with pytest.raises(InputError, match="not a PNG"):
        read_png_metadata(jpg)
    with pytest.raises(InputError, match="no such file"):
        read_png_metadata(tmp_path / "missing.png")
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    assert read_png_metadata(plain) == {}

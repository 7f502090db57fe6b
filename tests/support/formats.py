"""Real files of every upload format, made in the tests: Word documents and presentations with
python-docx and python-pptx, pages rendered to images (Pillow, DejaVu Sans for Cyrillic) and
PDFs of scanned pages (fpdf2), and hostile ones: a zip bomb, a pixel bomb, an encrypted
document, a deck of thousands of empty slides."""

from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib
from typing import TYPE_CHECKING

from tests.support.ingest import FONT_DIR

if TYPE_CHECKING:
    from PIL.Image import Image

SCAN_DPI = 300  # the scans' resolution: OCR renders PDF pages at the same (ocr_dpi)


def render_lines(lines: list[str], width: int = 1100, size: int = 30) -> Image:
    """A page of text as a scanner sees it: black on white, grey, no text layer."""
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

    font = ImageFont.truetype(str(FONT_DIR / "DejaVuSans.ttf"), size)
    step = int(size * 1.5)
    image = PILImage.new("L", (width, 2 * step + step * len(lines)), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((step, step + step * i), line, font=font, fill=0)
    return image


def image_bytes(image: Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def scanned_pdf(pages: list[str | list[str]], width: int = 1100, size: int = 30,
                fmt: str = "PNG") -> bytes:
    """A PDF of text pages (a str: a text layer) and scanned ones (a list of lines: only an
    image of them, `width` pixels wide with `size`-pixel letters, sized so that SCAN_DPI renders
    it pixel for pixel; 2480 and 42: an A4 page of 10-point text scanned at 300 dpi)."""
    from fpdf import FPDF

    pdf = FPDF(unit="pt")
    pdf.set_auto_page_break(auto=False)
    pdf.add_font("DejaVu", "", str(FONT_DIR / "DejaVuSans.ttf"))
    pdf.set_font("DejaVu", size=11)
    for page in pages:
        if isinstance(page, str):
            pdf.add_page(format=(420, 595))  # A5
            pdf.set_xy(36, 36)
            pdf.multi_cell(0, 14, page)
            continue
        image = render_lines(page, width, size)
        w, h = (image.width * 72 / SCAN_DPI, image.height * 72 / SCAN_DPI)
        pdf.add_page(format=(w, h))
        pdf.image(io.BytesIO(image_bytes(image, fmt)), x=0, y=0, w=w, h=h)
    return bytes(pdf.output())


def make_docx(sections: list[tuple[str | None, list[str]]]) -> bytes:
    """A Word document: each (heading, paragraphs) a section (heading None: text before any)."""
    import docx

    document = docx.Document()
    for heading, paragraphs in sections:
        if heading is not None:
            document.add_heading(heading, level=1)
        for paragraph in paragraphs:
            document.add_paragraph(paragraph)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def make_pptx(slides: list[tuple[str, str, str | None]]) -> bytes:
    """A presentation: each (title, body, speaker notes) one slide."""
    import pptx

    deck = pptx.Presentation()
    layout = deck.slide_layouts[1]  # title and content
    for title, body, notes in slides:
        slide = deck.slides.add_slide(layout)
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
        if notes:
            slide.notes_slide.notes_text_frame.text = notes
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def many_empty_slides(count: int) -> bytes:
    """A presentation of `count` empty slides, written as python-pptx writes one (its slide,
    relationship and content type copied `count` times: python-pptx itself takes minutes)."""
    import pptx

    deck = pptx.Presentation()
    deck.slides.add_slide(deck.slide_layouts[6])
    one = io.BytesIO()
    deck.save(one)
    parts = {i.filename: zipfile.ZipFile(io.BytesIO(one.getvalue())).read(i)
             for i in zipfile.ZipFile(io.BytesIO(one.getvalue())).infolist()}
    rels = parts["ppt/_rels/presentation.xml.rels"].decode()
    rid = re.search(r'Id="(\w+)"[^>]*Target="slides/slide1.xml"', rels)
    assert rid is not None
    relationship = re.search(r"<Relationship [^>]*Target=\"slides/slide1.xml\"/>", rels)
    assert relationship is not None
    presentation = parts["ppt/presentation.xml"].decode()
    slide_id = re.search(r"<p:sldId [^>]*/>", presentation)
    assert slide_id is not None
    types = parts["[Content_Types].xml"].decode()
    override = re.search(r'<Override PartName="/ppt/slides/slide1.xml"[^>]*/>', types)
    assert override is not None
    new_rels, new_ids, new_types = [], [], []
    for n in range(2, count + 1):
        parts[f"ppt/slides/slide{n}.xml"] = parts["ppt/slides/slide1.xml"]
        parts[f"ppt/slides/_rels/slide{n}.xml.rels"] = parts["ppt/slides/_rels/slide1.xml.rels"]
        new_rels.append(relationship.group(0).replace(f'Id="{rid.group(1)}"', f'Id="rIdS{n}"')
                        .replace("slide1.xml", f"slide{n}.xml"))
        new_ids.append(f'<p:sldId id="{255 + n}" r:id="rIdS{n}"/>')
        new_types.append(override.group(0).replace("slide1.xml", f"slide{n}.xml"))
    parts["ppt/_rels/presentation.xml.rels"] = rels.replace(
        "</Relationships>", "".join(new_rels) + "</Relationships>").encode()
    parts["ppt/presentation.xml"] = presentation.replace(
        slide_id.group(0), slide_id.group(0) + "".join(new_ids)).encode()
    parts["[Content_Types].xml"] = types.replace("</Types>", "".join(new_types) + "</Types>").encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    return out.getvalue()


def zip_bomb_docx(unpacked_bytes: int) -> bytes:
    """A real Word document with one more part: `unpacked_bytes` of zeros, a few kilobytes
    packed."""
    base = make_docx([("Bomb", ["Looks like a document."])])
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(base)) as src, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        info = zipfile.ZipInfo("word/media/zeros.bin")
        info.compress_type = zipfile.ZIP_DEFLATED
        with dst.open(info, "w", force_zip64=True) as part:
            block = bytes(1 << 20)
            for _ in range(unpacked_bytes >> 20):
                part.write(block)
    return out.getvalue()


def encrypted_docx(password: str = "s3cret-pass") -> bytes:
    """A Word document saved with a password, as Word does (msoffcrypto-tool, Agile encryption)."""
    from msoffcrypto.format.ooxml import OOXMLFile

    plain = make_docx([("Secret", ["Locked away."])])
    out = io.BytesIO()
    OOXMLFile(io.BytesIO(plain)).encrypt(password, out)
    return out.getvalue()


def pixel_bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width × height white pixels: tens of kilobytes that a decoder would
    turn into width × height bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    row = b"\x00" + b"\xff" * ((width + 7) // 8)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row * 256) for _ in range(height // 256))
    data += packer.compress(row * (height % 256)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
            + chunk(b"IEND", b""))

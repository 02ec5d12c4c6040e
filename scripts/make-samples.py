#!/usr/bin/env python3
"""Regenerates samples/photos/ from Debian's wallpaper packages (real photographs with
licences that allow redistribution): `apt-get install mate-backgrounds
lomiri-wallpapers-16.04`, `pip install pillow`, then run this from the repository root.
Each photo is downscaled to a 320-pixel short side and saved as JPEG quality 85. A few of
them also get edited copies in samples/photos/edited/ (the edits people make: grey, mirrored,
letterboxed, cropped, shrunk and re-encoded, brightened), so that `dino-curate dups` has
near-duplicates to find on the samples."""
from pathlib import Path
from PIL import Image, ImageEnhance, ImageOps

SOURCES = {
    # lomiri-wallpapers-16.04 (see /usr/share/doc/lomiri-wallpapers-16.04/copyright)
    "/usr/share/backgrounds/aitzgorri_by_Aitzol_Berasategi.jpg": ("Aitzol Berasategi, 2018", "CC-BY-4.0"),
    "/usr/share/backgrounds/analogpattern_by_Peter_Nerlich.jpg": ("Peter Nerlich, 2018", "CC-BY-SA-4.0"),
    "/usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg": ("Sander Klootwijk, 2018", "CC-BY-SA-4.0"),
    "/usr/share/backgrounds/Dragonfly_by_Bolly.jpg": ("\"Bolly\", 2018", "CC-BY-SA-4.0"),
    "/usr/share/backgrounds/free_by_Peter_Nerlich.jpg": ("Peter Nerlich, 2018", "CC-BY-SA-4.0"),
    "/usr/share/backgrounds/friends_by_Aitzol_Berasategi.jpg": ("Aitzol Berasategi, 2018", "CC-BY-4.0"),
    "/usr/share/backgrounds/greentock_by_Peter_Nerlich.jpg": ("Peter Nerlich, 2018", "CC-BY-SA-4.0"),
    "/usr/share/backgrounds/life_by_Aitzol_Berasategi.jpg": ("Aitzol Berasategi, 2018", "CC-BY-4.0"),
    "/usr/share/backgrounds/picosdeeuropa_by_Aitzol_Berasategi.jpg": ("Aitzol Berasategi, 2018", "CC-BY-4.0"),
    "/usr/share/backgrounds/Picture_0B_by_freespace.jpg": ("Trevor \"Freespace\", 2018", "CC-BY-4.0"),
    "/usr/share/backgrounds/Picture_1A_by_freespace.jpg": ("Trevor \"Freespace\", 2018", "CC-BY-4.0"),
    "/usr/share/backgrounds/seeding_by_Clements_Engelhardt.jpg": ("Clemens Engelhardt, 2018", "CC0-1.0"),
    "/usr/share/backgrounds/sunset_by_Aitzol_Berasategi.jpg": ("Aitzol Berasategi, 2018", "CC-BY-4.0"),
    "/usr/share/backgrounds/umang_by_Abhishek_Mudgal.jpg": ("Abhishek Mudgal, 2018", "see lomiri-wallpapers-16.04 copyright"),
    "/usr/share/backgrounds/Wine_by_Jakkub_Mede.jpg": ("Jakkub Mede, 2018", "see lomiri-wallpapers-16.04 copyright"),
    # mate-backgrounds (see /usr/share/doc/mate-backgrounds/copyright)
    "/usr/share/backgrounds/mate/nature/Aqua.jpg": ("Charles Barbin, 2008", "GPL-2+"),
    "/usr/share/backgrounds/mate/nature/Blinds.jpg": ("Lennart Poettering, Andrea Cimitan, 2008", "GPL-2+"),
    "/usr/share/backgrounds/mate/nature/Dune.jpg": ("Marco Cogoni 2007, Hylke Bons 2008", "GPL-2+"),
    "/usr/share/backgrounds/mate/nature/FreshFlower.jpg": ("Jens Ansorg, 2005", "GPL-2+"),
    "/usr/share/backgrounds/mate/nature/Garden.jpg": ("Charles Barbin, 2008", "GPL-2+"),
    "/usr/share/backgrounds/mate/nature/GreenMeadow.jpg": ("Timothy Schellhase 2005, Lapo Calamandrei 2008", "GPL-2+"),
    "/usr/share/backgrounds/mate/nature/LadyBird.jpg": ("Charles Barbin, 2008", "GPL-2+"),
    "/usr/share/backgrounds/mate/nature/RainDrops.jpg": ("\"blackcombwhistler07\", 2008", "GPL-2+"),
    "/usr/share/backgrounds/mate/nature/Storm.jpg": ("Sergey Nazarov, 2008", "GPL-2+"),
    "/usr/share/backgrounds/mate/nature/TwoWings.jpg": ("Charles Barbin, Hylke Bons, 2008", "GPL-2+"),
    "/usr/share/backgrounds/mate/nature/Wood.jpg": ("Jean-François Fortin Tam, 2008", "GPL-2+"),
    "/usr/share/backgrounds/mate/nature/YellowFlower.jpg": ("Charles Barbin, 2008", "GPL-2+"),
    "/usr/share/backgrounds/mate/abstract/Elephants.jpg": ("Wyng Stancikaite, 2020", "GPL-2+"),
    "/usr/share/backgrounds/mate/desktop/GreenTraditional.jpg": ("l0r4n0n (Stefan Geissler), 2012", "GPL-2+"),
}
SHORT_SIDE = 320

out = Path("samples/photos")
out.mkdir(parents=True, exist_ok=True)
rows = []
for src, (author, licence) in SOURCES.items():
    img = Image.open(src).convert("RGB")
    scale = SHORT_SIDE / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
    name = Path(src).stem.lower() + ".jpg"
    img.save(out / name, quality=85)
    package = "lomiri-wallpapers-16.04" if "/mate/" not in src else "mate-backgrounds"
    rows.append(f"| {name} | {author} | {licence} | Debian `{package}`: `{src}` |")

(out / "ATTRIBUTION.md").write_text(
    "# Sample photos\n\n"
    "Real photographs from Debian's wallpaper packages, downscaled to a 320-pixel short side\n"
    "(JPEG quality 85) by `scripts/make-samples.py`. Each keeps its original licence; the full\n"
    "licence texts are in the Debian packages' `copyright` files\n"
    "(`/usr/share/doc/<package>/copyright`) and at https://creativecommons.org/licenses/ and\n"
    "https://www.gnu.org/licenses/old-licenses/gpl-2.0.html. Modification: resized.\n\n"
    "| file | author | licence | source |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
)


def letterbox(img):
    """Pads to 16:9 with black bars."""
    width = round(img.height * 16 / 9)
    canvas = Image.new("RGB", (max(width, img.width), img.height))
    canvas.paste(img, ((canvas.width - img.width) // 2, 0))
    return canvas


def centre_crop(img, share=0.8):
    w, h = round(img.width * share ** 0.5), round(img.height * share ** 0.5)
    left, top = (img.width - w) // 2, (img.height - h) // 2
    return img.crop((left, top, left + w, top + h))


EDITS = {
    "dune.jpg": ("dune-grey.jpg", lambda im: ImageOps.grayscale(im).convert("RGB"), 85),
    "ladybird.jpg": ("ladybird-mirrored.jpg", ImageOps.mirror, 85),
    "storm.jpg": ("storm-letterboxed.jpg", letterbox, 85),
    "garden.jpg": ("garden-cropped.jpg", centre_crop, 85),
    "wine_by_jakkub_mede.jpg": ("wine-small.jpg", lambda im: im.resize((im.width // 2, im.height // 2), Image.LANCZOS), 40),
    "bridge_by_sander_klootwijk.jpg": ("bridge-brighter.jpg", lambda im: ImageEnhance.Brightness(im).enhance(1.3), 85),
}
edited = out / "edited"
edited.mkdir(exist_ok=True)
for name, (copy, edit, quality) in EDITS.items():
    edit(Image.open(out / name).convert("RGB")).save(edited / copy, quality=quality)
    rows.append(f"| edited/{copy} | as {name} | as {name} | `{name}`, edited by `scripts/make-samples.py` |")
(out / "ATTRIBUTION.md").write_text(
    (out / "ATTRIBUTION.md").read_text().replace("Modification: resized.", "Modifications: resized; the copies in `edited/` also edited as named.")
    + "\n".join(rows[-len(EDITS):]) + "\n"
)
print(f"{len(SOURCES)} photos and {len(EDITS)} edited copies written to {out}")

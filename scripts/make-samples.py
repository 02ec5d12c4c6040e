#!/usr/bin/env python3
"""Regenerates samples/photos/ from Debian's wallpaper packages (real photographs with
licences that allow redistribution): `apt-get install mate-backgrounds
lomiri-wallpapers-16.04`, `pip install pillow`, then run this from the repository root.
Each photo is downscaled to a 320-pixel short side and saved as JPEG quality 85."""
from pathlib import Path
from PIL import Image

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
print(f"{len(rows)} photos written to {out}")

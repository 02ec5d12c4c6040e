#!/usr/bin/env bash
# Real bursts for `dups`' kinds (issue 27): frames of two real videos that Debian ships in
# opencv-doc (4.6.0, Apache-2.0 / BSD-3-Clause), each a JPEG with the EXIF time of its moment
# in the video, plus edited copies of some frames that keep their original's time.
#
#   bash benches/burst_bench.sh OUT
#
# OUT/images/ gets the photos and OUT/truth.json says what each is:
#   {"files": {name: {"scene": S, "moment": M, "burst": B or null, "copy_of": name or null}}}
# vtest.avi: a fixed camera over a courtyard, people walking (768 x 576, 10 fps, 79.5 s):
#   four bursts of 4 frames 1 s apart, starting 14 s apart (11 s from one burst's last frame
#   to the next one's first: more than a burst's 10 s; the same background throughout), and
#   two single frames 13 s and 15 s later, each with two copies (half size; a 90 % crop).
# tree.avi: a hand-held shot of a tree (320 x 240, 68 frames over 29.5 s): two bursts of 3
#   frames 1 s apart, starting 15 s apart.
# Needs apt (ffmpeg, exiftool, and the 96 MB opencv-doc package, downloaded, not installed).
set -euo pipefail
out=${1:?usage: burst_bench.sh OUT}
mkdir -p "$out/images" "$out/src"
need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v exiftool >/dev/null || need+=(libimage-exiftool-perl)
if ((${#need[@]})); then
  sudo=(); [ "$(id -u)" -ne 0 ] && sudo=(sudo)
  "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
fi
data=usr/share/doc/opencv-doc/examples/data
if [ ! -f "$out/src/$data/vtest.avi" ]; then
  (cd "$out/src" && apt-get download opencv-doc >/dev/null &&
    dpkg-deb --fsys-tarfile opencv-doc_*_all.deb |
    tar -x "./$data/vtest.avi" "./$data/tree.avi" && rm opencv-doc_*_all.deb)
fi

# frame VIDEO SECONDS NAME: one frame as a JPEG with the EXIF time 2024-05-01 12:00:00 + SECONDS
frame() {
  local file=$out/images/$3.jpg t=$2
  ffmpeg -v error -y -ss "$t" -i "$out/src/$data/$1" -frames:v 1 -q:v 2 "$file"
  exiftool -q -overwrite_original \
    "-DateTimeOriginal=2024:05:01 12:$(printf %02d:%02d $((t / 60)) $((t % 60)))" "$file"
}

truth=()
entry() { truth+=("\"$1.jpg\": {\"scene\": \"$2\", \"moment\": $3, \"burst\": $4, \"copy_of\": $5}"); }

for b in 0 1 2 3; do
  for i in 0 1 2 3; do
    t=$((2 + 14 * b + i))
    frame vtest.avi "$t" "court-b${b}-f${i}"
    entry "court-b${b}-f${i}" court "$t" "\"court-$b\"" null
  done
done
for t in 60 75; do
  frame vtest.avi "$t" "court-single-$t"
  entry "court-single-$t" court "$t" null null
  ffmpeg -v error -y -i "$out/images/court-single-$t.jpg" -vf scale=iw/2:ih/2 -q:v 5 \
    "$out/images/court-single-$t-half.jpg"
  ffmpeg -v error -y -i "$out/images/court-single-$t.jpg" -vf "crop=iw*0.9:ih*0.9:iw*0.05:0" \
    -q:v 3 "$out/images/court-single-$t-crop.jpg"
  for copy in half crop; do
    exiftool -q -overwrite_original -tagsFromFile "$out/images/court-single-$t.jpg" \
      -DateTimeOriginal "$out/images/court-single-$t-$copy.jpg"
    entry "court-single-$t-$copy" court "$t" null "\"court-single-$t.jpg\""
  done
done
for b in 0 1; do
  for i in 0 1 2; do
    t=$((2 + 15 * b + i))
    frame tree.avi "$t" "tree-b${b}-f${i}"
    entry "tree-b${b}-f${i}" tree "$t" "\"tree-$b\"" null
  done
done
{
  printf '{"files": {\n'
  (IFS=$'\n'; echo "${truth[*]}") | sed '$!s/$/,/'
  printf '}}\n'
} >"$out/truth.json"
echo "$(ls "$out/images" | wc -l) photos in $out/images, truth in $out/truth.json"

#!/usr/bin/env bash
# Mesa's lavapipe (a CPU Vulkan driver) new enough for Dawn to offer WebGPU's shader-f16, unpacked into
# build/lavapipe/ (not installed): the one adapter without a GPU on which the float16 libraries run.
# SwiftShader has no shader-f16; Debian 12's own lavapipe (Mesa 22.3) is one Dawn does not accept; the
# bookworm-backports one (Mesa 25) is. Its libraries come from Debian 12 (mesa-vulkan-drivers pulls them in).
#
#   tests/tools/fetch_lavapipe.sh build/lavapipe     -> build/lavapipe/icd.json (VK_ICD_FILENAMES)
set -euo pipefail
out=$(realpath -m "${1:?usage: fetch_lavapipe.sh OUT_DIR}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main" \
  > "$work/sources.list"
apt_private=(-o APT::Sandbox::User=root -o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/nonexistent
             -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o Debug::NoLocking=1)
apt-get "${apt_private[@]}" update -qq
(cd "$work" && apt-get "${apt_private[@]}" download -qq mesa-vulkan-drivers/bookworm-backports)
dpkg-deb -x "$work"/mesa-vulkan-drivers_*.deb "$work/root"
lib="$work/root/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so"
test -f "$lib" || { echo "fetch_lavapipe: no libvulkan_lvp.so in the package" >&2; exit 1; }
# Replace the folder as a whole, so a half-fetched one never looks finished.
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
cp "$lib" "$out.tmp/"
version=$(dpkg-deb -f "$work"/mesa-vulkan-drivers_*.deb Version)
printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "%s", "api_version": "1.3.0"}}\n' \
  "$out/libvulkan_lvp.so" > "$out.tmp/icd.json"
echo "$version" > "$out.tmp/VERSION"
rm -rf "$out" && mv "$out.tmp" "$out"
echo "lavapipe $version -> $out/icd.json"

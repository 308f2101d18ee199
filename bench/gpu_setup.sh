# Sourced by the scripts that run on the lent GPU machine (device tool), from the repo root, with .gpu carried
# (../shared/tools/gpu-pack.sh): installs the Vulkan loader, Node (as gpu-node) and the npm packages Dawn needs,
# and points Vulkan at the NVIDIA driver.
for f in .gpu/debs/*.deb; do dpkg -x "$f" /; done; ldconfig
xz -dc .gpu/node.xz > /usr/local/bin/gpu-node; chmod +x /usr/local/bin/gpu-node
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
rm -rf node_modules && mkdir -p node_modules && cp -a .gpu/npm/node_modules/. node_modules/
if [ -d .bench/npm ]; then cp -a .bench/npm/. node_modules/; fi

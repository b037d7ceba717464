"""Maps the repository's top-level folders into one import namespace, `hil`.

`devices/` is imported as `hil.devices`, `rtl/` as `hil.rtl`, and so on, so generic names never land
in site-packages. Subpackages are found by walking each folder, so a new one needs no edit here.
"""

from setuptools import find_packages, setup

ROOTS = {
    "hil": "hil",
    "hil.devices": "devices",
    "hil.rtl": "rtl",
    "hil.lut_builder": "lut_builder",
    "hil.optimizers": "optimizers",
}

packages: list[str] = []
package_dir: dict[str, str] = {}
for name, folder in ROOTS.items():
    package_dir[name] = folder
    packages.append(name)
    for sub in find_packages(folder):
        if name == "hil" and sub.split(".")[0] in {"devices", "rtl", "lut_builder", "optimizers"}:
            continue
        packages.append(f"{name}.{sub}")

setup(packages=packages, package_dir=package_dir)

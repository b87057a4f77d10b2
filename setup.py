"""ament_python package definition; also installable with plain pip (see README)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "mtl_perception"
# Configs, class maps, the Fast DDS profile, the rviz config and the vision_msgs definitions are
# package data (mtl_perception/resources.py finds them in any install); config/ is also copied to
# share/ where ros2 launch and rviz look. `config/` at the top is a link to mtl_perception/config.
CONFIG = f"{PACKAGE}/config"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["config/*", "ros/msg_definitions/vision_msgs/*.msg"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (
            f"share/{PACKAGE}/config",
            glob(f"{CONFIG}/*.yaml") + glob(f"{CONFIG}/*.rviz") + glob(f"{CONFIG}/*.xml"),
        ),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="mtl_perception maintainers",
    maintainer_email="maintainers@mtl-perception.invalid",
    description="Multi-task semantic segmentation and object detection for ROS 2.",
    license="Apache-2.0",
    python_requires=">=3.10",
    # colcon test runs pytest only when the "test" extra names it (tests_require is ignored by
    # setuptools >= 72, and colcon then falls back to unittest and finds nothing).
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "perception_node = mtl_perception.ros.node:main",
            "overlay_node = mtl_perception.ros.overlay_node:main",
            "mtl-bag = mtl_perception.ros.bags.cli:main",
            "mtl-train = mtl_perception.training.cli:main",
            "mtl-eval = mtl_perception.evaluation.evaluate:main",
            "mtl-export = mtl_perception.inference.export:main",
        ],
    },
)

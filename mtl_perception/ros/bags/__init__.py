"""The bag tools (``mtl-bag``), one module per stage.

* :mod:`.record`: a dataset split -> a bag with ground truth (rosbags only; never imports rclpy).
* :mod:`.read`: camera frames and ground truth of an input bag; a run's output bag.
* :mod:`.settings`, :mod:`.node_process`, :mod:`.replay`, :mod:`.run`: the run stage (the node's
  parameters, its process, the replay over DDS, the output bag).
* :mod:`.score`, :mod:`.criteria`: scoring (shared metric code with ``mtl-eval``) and the gate.
* :mod:`.report`, :mod:`.provenance`: report.json, frames.jsonl, report.md, pictures; hashes,
  versions and host.
* :mod:`.pipeline`: ``run``, ``score``, ``evaluate`` (= run + score); :mod:`.cli`: ``mtl-bag``.
"""

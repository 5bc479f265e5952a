"""The online path: a packed file (or rawframes folder) → TSN sampling → crop/flip → batch on the device.

Modules: `sampling` (segment and frame indices), `transforms` (crops, flips, flow's x negation),
`dataset` (`VideoDataset`), `loader` (`make_loader`), `synthetic` (generated videos for the demo and tests).
The files themselves are read by `mateffnet.io`; the offline job that writes them is `mateffnet.prepare`.
"""

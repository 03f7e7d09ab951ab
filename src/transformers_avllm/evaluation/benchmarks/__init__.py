"""Loaders of each benchmark's published annotation files (read from local copies) into `Sample` records, by family:
`video` (open-ended and multiple-choice video QA, Video-ChatGPT), `audio_visual` (AVSD, MUSIC-AVQA, AVSSD), `audio`
(audio QA, acoustic scenes, captioning). `docs/evaluation.md` says where to download each and how to lay it out."""

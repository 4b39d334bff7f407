"""Coverage-guided fuzzing of the vbms_core decoders (issue 13): `vbms fuzz decoders`.

- targets: one check per decoder, framer, reassembler and the config validator,
  with the invariant (decodes or RemoteProtocolError / ConfigError, consistent
  results, bounded buffers and time);
- checksums: structure-aware repairs used as atheris custom mutators;
- seeds: seed inputs from the real frames in tests/golden and hil/data;
- worker: one atheris/libFuzzer process per target, and the minimizer;
- runner: runs the campaigns, reads libFuzzer's statistics, saves findings;
- findings: the regression file format that tests/test_fuzz.py replays.

Nothing here imports atheris at module level: replaying findings needs only vbms_core.
"""

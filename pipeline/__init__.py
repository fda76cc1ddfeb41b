"""The launcher layer: options, `build_pipeline`, `run`. Only parses options and wires transforms."""

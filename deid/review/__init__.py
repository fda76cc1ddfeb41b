"""Human review of uncertain detections and sampled clean outputs (pure: no Beam).

`decision` decides per input whether it is held (one rule), `held` is the on-disk model of a held
input (`review/<input_sha256>/review.json`, no text values), `previews` renders what a reviewer
looks at, `page` builds `review/index.html`.
"""

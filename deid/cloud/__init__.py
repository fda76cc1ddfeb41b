"""Clients for the cloud surfaces the pipeline talks to: the Cloud Healthcare API and DICOMweb servers.

Pure domain code: nothing here imports Beam. `transforms/healthcare.py` and `transforms/dicomweb.py`
wrap these clients in DoFns.
"""

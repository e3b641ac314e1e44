"""The FlushControl service: control.proto and the code generated from it.

Regenerate with `make proto`; a unit test checks the committed code matches the .proto.
"""

"""The FlushControl service's code, generated out of collector/proto/control.proto.

The .proto stays with the collector, which serves the service; regenerate with `make proto`. A
unit test checks the committed code matches the .proto.
"""

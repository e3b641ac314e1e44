"""A function module whose import never finishes, so the runtime never calls next."""

import time

time.sleep(3600)


def handler(event, context):
    return None

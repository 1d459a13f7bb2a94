"""The passthrough stage scripts/bench-python times: `process` returns the frame, the
least a Python stage can do, as PvaPy's base UserDataProcessor returns its object."""


class Passthrough:
    def __init__(self, args):
        pass

    def process(self, frame):
        return frame

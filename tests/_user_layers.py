"""Users' Python layers (``type: "Python"``) as module source, written next to a test's net and
imported from there as Caffe imports them."""

SHIFT_LAYER = """
import caffe


class Shift(caffe.Layer):
    def setup(self, bottom, top):
        self.blobs.add_blob(bottom[0].data.shape[1])

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data + self.blobs[0].data.reshape(1, -1, 1, 1)
"""

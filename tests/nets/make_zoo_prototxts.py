"""Write the zoo's deploy prototxts (zoo/<model>.prototxt) of the classic Caffe model zoo.

Each net is caffe-compat's own text, generated here, with exactly the layer names, types, wiring,
settings and parameter shapes of the deploy definition its released weights were trained with, so
the released caffemodel loads into it by name. Nets whose layout tests/nets/make_prototxts.py
already builds under the released names (CaffeNet, GoogLeNet, VGG-16, ResNet-50, SqueezeNet 1.1)
reuse its builders; the others are built below. Run ``python tests/nets/make_zoo_prototxts.py``
after editing; tests/zoo/test_zoo_prototxts.py fails while a zoo file differs from what this writes,
and checks every net against fingerprints of the released deploy files (tests/nets/fingerprint.py).

The released definitions these follow (layer names and settings only, nothing copied verbatim):
  bvlc_alexnet, bvlc_reference_caffenet, bvlc_googlenet, bvlc_reference_rcnn_ilsvrc13,
  finetune_flickr_style   BVLC/caffe models/<name>/deploy.prototxt
  res10_300x300_ssd       opencv/opencv samples/dnn/face_detector/deploy.prototxt
  open_nsfw               yahoo/open_nsfw nsfw_model/deploy.prototxt
  squeezenet_v1_1         DeepScale/SqueezeNet SqueezeNet_v1.1/deploy.prototxt
  resnet_50               KaimingHe/deep-residual-networks prototxt/ResNet-50-deploy.prototxt
  vgg_ilsvrc_16           gist ksimonyan/211839e770f7b538e2d8 VGG_ILSVRC_16_layers_deploy.prototxt
The batch size is 1 here (the released files declare 10 or 1); nothing about the weights depends
on it. OpenCV's face detector deploy also sets ``clip: 1`` in detection_output_param, an OpenCV
extension unknown to Caffe's caffe.proto; it is left out (caffe_compat.app.faces clips boxes itself).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

if __name__ == "__main__":  # run as a script: tests/ holds the shared nets builders
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nets.make_prototxts import Net, caffenet, googlenet, resnet50, squeezenet11, vgg16

from caffe_compat.proto import caffe_pb2

ZOO = Path(__file__).resolve().parents[2] / "zoo"


def alexnet() -> Net:
    """BVLC AlexNet: CaffeNet's layers with LRN before pooling (norm1, pool1, norm2, pool2)."""
    n = Net("AlexNet", (1, 3, 227, 227))
    x = n.conv("conv1", "data", num_output=96, kernel_size=11, stride=4)
    n.relu("relu1", x)
    x = n.pool("pool1", n.lrn("norm1", x), "MAX", kernel_size=3, stride=2)
    x = n.conv("conv2", x, num_output=256, pad=2, kernel_size=5, group=2)
    n.relu("relu2", x)
    x = n.pool("pool2", n.lrn("norm2", x), "MAX", kernel_size=3, stride=2)
    x = n.conv("conv3", x, num_output=384, pad=1, kernel_size=3)
    n.relu("relu3", x)
    x = n.conv("conv4", x, num_output=384, pad=1, kernel_size=3, group=2)
    n.relu("relu4", x)
    x = n.conv("conv5", x, num_output=256, pad=1, kernel_size=3, group=2)
    n.relu("relu5", x)
    x = n.pool("pool5", x, "MAX", kernel_size=3, stride=2)
    for i in (6, 7):
        x = n.fc(f"fc{i}", x, 4096)
        n.relu(f"relu{i}", x)
        n.dropout(f"drop{i}", x, 0.5)
    n.softmax(n.fc("fc8", x, 1000))
    return n


def _new_head(net: Net, name: str, head: str, outputs: int, *, softmax: bool) -> Net:
    """A fine-tuned CaffeNet: fc8 renamed ``head`` with ``outputs`` classes; the softmax kept
    (reading the new head) or dropped (the head's raw scores are the output)."""
    net.proto.name = name
    layers = net.proto.layer
    fc8 = next(layer for layer in layers if layer.name == "fc8")
    fc8.name, fc8.top[0] = head, head
    fc8.inner_product_param.num_output = outputs
    prob = next(layer for layer in layers if layer.name == "prob")
    if softmax:
        prob.bottom[0] = head
    else:
        layers.remove(prob)
    return net


def rcnn_ilsvrc13() -> Net:
    """R-CNN ILSVRC13: CaffeNet whose SVMs became ``fc-rcnn`` (200 scores, no softmax)."""
    return _new_head(caffenet(), "R-CNN-ilsvrc13", "fc-rcnn", 200, softmax=False)


def flickr_style() -> Net:
    """CaffeNet fine-tuned on Flickr Style: ``fc8_flickr`` (20 styles) and a softmax."""
    return _new_head(caffenet(), "FlickrStyleCaffeNet", "fc8_flickr", 20, softmax=True)


def _bn_scale(n: Net, bn: str, scale: str, bottom: str, top: str, **bn_param) -> str:
    """BatchNorm (stored statistics) then Scale with bias, the Scale in place on ``top``."""
    params = {"batch_norm_param": bn_param} if bn_param else {}
    n.layer(bn, "BatchNorm", [bottom], [top], **params)
    n.layer(scale, "Scale", [top], [top], scale_param={"bias_term": True})
    return top


def open_nsfw() -> Net:
    """Yahoo's ResNet-50 "1by2" (half the filters; biased convolutions, projection shortcuts named
    ``conv_stage{s}_block0_proj_shortcut``, ``eltwise_stage{s}_block{b}``), 2-way softmax."""
    n = Net("ResNet_50_1by2_nsfw", (1, 3, 224, 224))

    def unit(name: str, bottom: str, outputs: int, kernel: int, stride: int, relu: bool) -> str:
        conv = {"num_output": outputs, "pad": kernel // 2, "kernel_size": kernel, "stride": stride}
        x = n.conv(f"conv_{name}", bottom, **conv)
        _bn_scale(n, f"bn_{name}", f"scale_{name}", x, x, use_global_stats=True)
        if relu:
            n.relu(f"relu_{name}", x)
        return x

    x = unit("1", "data", 64, 7, 2, relu=True)
    x = n.pool("pool1", x, "MAX", kernel_size=3, stride=2)
    for stage, (blocks, width) in enumerate([(3, 32), (4, 64), (6, 128), (3, 256)]):
        for block in range(blocks):
            p = f"stage{stage}_block{block}"
            stride = 2 if block == 0 and stage > 0 else 1
            shortcut = x
            if block == 0:
                shortcut = unit(f"{p}_proj_shortcut", x, 4 * width, 1, stride, relu=False)
            y = unit(f"{p}_branch2a", x, width, 1, stride, relu=True)
            y = unit(f"{p}_branch2b", y, width, 3, 1, relu=True)
            y = unit(f"{p}_branch2c", y, 4 * width, 1, 1, relu=False)
            x = n.layer(f"eltwise_{p}", "Eltwise", [shortcut, y], [f"eltwise_{p}"])
            n.relu(f"relu_{p}", x)
    x = n.pool("pool", x, "AVE", kernel_size=7, stride=1)
    n.softmax(n.fc("fc_nsfw", x, 2))
    return n


# The res10 trunk's pre-activation blocks, with the release's irregular "_h" suffixes:
# (block, bottom, conv1 width, conv2 width, stride, dilation, suffixes of bn1/scale1, conv1,
#  bn2/scale2, conv2, conv_expand).
_RES10_BLOCKS = (
    ("layer_128_1", "layer_64_1_sum", 128, 128, 2, 1, ("_h", "_h", "", "", "_h")),
    ("layer_256_1", "layer_128_1_sum", 256, 256, 2, 1, ("", "", "", "", "")),
    ("layer_512_1", "layer_256_1_sum", 128, 256, 1, 2, ("", "_h", "_h", "_h", "_h")),
)
# Multibox heads: (source blob, head name, priors per cell, min size, max size, aspect ratios,
# step). Two classes (background, face), so conf has 2 outputs per prior and loc 4.
_RES10_HEADS = (
    ("conv4_3_norm", "conv4_3_norm", 4, 30.0, 60.0, (2.0,), 8.0),
    ("fc7", "fc7", 6, 60.0, 111.0, (2.0, 3.0), 16.0),
    ("conv6_2_h", "conv6_2", 6, 111.0, 162.0, (2.0, 3.0), 32.0),
    ("conv7_2_h", "conv7_2", 6, 162.0, 213.0, (2.0, 3.0), 64.0),
    ("conv8_2_h", "conv8_2", 4, 213.0, 264.0, (2.0,), 100.0),
    ("conv9_2_h", "conv9_2", 4, 264.0, 315.0, (2.0,), 300.0),
)


def res10_300x300_ssd() -> Net:
    """OpenCV's res10 SSD face detector: a ResNet-10-like pre-activation trunk on 300x300
    inputs (input BatchNorm + Scale), extra layers conv6..conv9, L2-normalised conv4_3 head and
    six multibox heads, 2-class softmax and DetectionOutput (keep 200, threshold 0.2)."""
    n = Net("res10_300x300_ssd", (1, 3, 300, 300))
    _bn_scale(n, "data_bn", "data_scale", "data", "data_bn")
    x = n.conv("conv1_h", "data_bn", num_output=32, pad=3, kernel_size=7, stride=2)
    _bn_scale(n, "conv1_bn_h", "conv1_scale_h", x, x)
    n.relu("conv1_relu", x)
    n.layer(
        "conv1_pool", "Pooling", [x], ["conv1_pool"], pooling_param={"kernel_size": 3, "stride": 2}
    )
    unbiased = {"bias_term": False, "pad": 1, "kernel_size": 3, "stride": 1}
    y = n.conv("layer_64_1_conv1_h", "conv1_pool", num_output=32, **unbiased)
    _bn_scale(n, "layer_64_1_bn2_h", "layer_64_1_scale2_h", y, y)
    n.relu("layer_64_1_relu2", y)
    y = n.conv("layer_64_1_conv2_h", y, num_output=32, **unbiased)
    n.layer("layer_64_1_sum", "Eltwise", [y, "conv1_pool"], ["layer_64_1_sum"])
    for block, bottom, width1, width2, stride, dilation, (s1, sc1, s2, sc2, se) in _RES10_BLOCKS:
        b = f"{block}_bn1{s1}"
        _bn_scale(n, b, f"{block}_scale1{s1}", bottom, b)
        n.relu(f"{block}_relu1", b)
        conv1 = {**unbiased, "stride": stride}
        y = n.conv(f"{block}_conv1{sc1}", b, num_output=width1, **conv1)
        _bn_scale(n, f"{block}_bn2{s2}", f"{block}_scale2{s2}", y, y)
        n.relu(f"{block}_relu2", y)
        conv2 = {**unbiased, "pad": dilation}
        if dilation > 1:
            conv2["dilation"] = dilation
        y = n.conv(f"{block}_conv2{sc2}", y, num_output=width2, **conv2)
        expand = {"bias_term": False, "pad": 0, "kernel_size": 1, "stride": stride}
        e = n.conv(f"{block}_conv_expand{se}", b, num_output=width2, **expand)
        n.layer(f"{block}_sum", "Eltwise", [y, e], [f"{block}_sum"])
    _bn_scale(n, "last_bn_h", "last_scale_h", "layer_512_1_sum", "layer_512_1_sum")
    n.layer("last_relu", "ReLU", ["layer_512_1_sum"], ["fc7"])
    x = "fc7"
    for i, stride in ((6, 2), (7, 2), (8, 1), (9, 1)):
        width = 128 if i == 6 else 64
        x = n.conv(f"conv{i}_1_h", x, num_output=width, pad=0, kernel_size=1, stride=1)
        n.relu(f"conv{i}_1_relu", x)
        out = 256 if i == 6 else 128
        x = n.conv(f"conv{i}_2_h", x, num_output=out, pad=1, kernel_size=3, stride=stride)
        n.relu(f"conv{i}_2_relu", x)
    n.layer(
        "conv4_3_norm",
        "Normalize",
        ["layer_256_1_bn1"],
        ["conv4_3_norm"],
        norm_param={
            "across_spatial": False,
            "scale_filler": {"type": "constant", "value": 20.0},
            "channel_shared": False,
        },
    )
    outputs: dict[str, list[str]] = {"loc": [], "conf": [], "priorbox": []}
    for source, head, priors, min_size, max_size, ratios, step in _RES10_HEADS:
        for kind, width in (("loc", 4 * priors), ("conf", 2 * priors)):
            name = f"{head}_mbox_{kind}"
            n.conv(name, source, num_output=width, pad=1, kernel_size=3, stride=1)
            perm = n.layer(
                f"{name}_perm",
                "Permute",
                [name],
                [f"{name}_perm"],
                permute_param={"order": [0, 2, 3, 1]},
            )
            flat = f"{name}_flat"
            n.layer(flat, "Flatten", [perm], [flat], flatten_param={"axis": 1})
            outputs[kind].append(flat)
        prior = f"{head}_mbox_priorbox"
        box = {
            "min_size": [min_size],
            "max_size": [max_size],
            "aspect_ratio": list(ratios),
            "flip": True,
            "clip": False,
            "variance": [0.1, 0.1, 0.2, 0.2],
            "step": step,
            "offset": 0.5,
        }
        n.layer(prior, "PriorBox", [source, "data"], [prior], prior_box_param=box)
        outputs["priorbox"].append(prior)
    for kind, axis in (("loc", 1), ("conf", 1), ("priorbox", 2)):
        name = f"mbox_{kind}"
        n.layer(name, "Concat", outputs[kind], [name], concat_param={"axis": axis})
    n.layer(
        "mbox_conf_reshape",
        "Reshape",
        ["mbox_conf"],
        ["mbox_conf_reshape"],
        reshape_param={"shape": {"dim": [0, -1, 2]}},
    )
    n.layer(
        "mbox_conf_softmax",
        "Softmax",
        ["mbox_conf_reshape"],
        ["mbox_conf_softmax"],
        softmax_param={"axis": 2},
    )
    n.layer(
        "mbox_conf_flatten",
        "Flatten",
        ["mbox_conf_softmax"],
        ["mbox_conf_flatten"],
        flatten_param={"axis": 1},
    )
    n.layer(
        "detection_out",
        "DetectionOutput",
        ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox"],
        ["detection_out"],
        detection_output_param={
            "num_classes": 2,
            "share_location": True,
            "background_label_id": 0,
            "nms_param": {"nms_threshold": 0.45, "top_k": 400},
            "code_type": caffe_pb2.PriorBoxParameter.CENTER_SIZE,
            "keep_top_k": 200,
            "confidence_threshold": 0.2,
        },
    )
    n.proto.layer[-1].include.add(phase=caffe_pb2.TEST)
    return n


NETS: dict[str, Callable[[], Net]] = {
    "bvlc_alexnet": alexnet,
    "bvlc_reference_caffenet": caffenet,
    "bvlc_googlenet": googlenet,
    "bvlc_reference_rcnn_ilsvrc13": rcnn_ilsvrc13,
    "finetune_flickr_style": flickr_style,
    "res10_300x300_ssd": res10_300x300_ssd,
    "open_nsfw": open_nsfw,
    "squeezenet_v1_1": squeezenet11,
    "resnet_50": resnet50,
    "vgg_ilsvrc_16": vgg16,
}

HEADER = (
    "# {name}: caffe-compat's own deploy definition, with the layer names, types and shapes\n"
    "# of the released weights. Generated by tests/nets/make_zoo_prototxts.py (edit that, then\n"
    "# run it).\n"
)


def render(name: str) -> str:
    return HEADER.format(name=name) + NETS[name]().text()


def main() -> None:
    for name in NETS:
        path = ZOO / f"{name}.prototxt"
        path.write_text(render(name), encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

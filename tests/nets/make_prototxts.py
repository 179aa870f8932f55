"""Write the project's own deploy prototxts of the classic Caffe model zoo into tests/nets/data/.

Each net is rebuilt here from its published architecture (layer names, wiring and settings as
released, V2 syntax, one ``Input`` layer, inference layers only), so the test data is ours and its
provenance is one reviewable file. Run ``python tests/nets/make_prototxts.py`` after editing;
tests/nets/test_prototxts.py fails while a data file differs from what this script writes.

Sources of the architectures (layer names and settings only, nothing copied verbatim):
  caffenet      BVLC reference CaffeNet (AlexNet variant: pool before LRN, grouped conv2/4/5)
  googlenet     BVLC GoogLeNet (Szegedy et al. 2014; inception 3a-5b, deploy without aux heads)
  vgg16         VGG ILSVRC-2014 16-layer (Simonyan & Zisserman), deploy form
  resnet50      ResNet-50 (He et al. 2015), the released Caffe deploy layout: ``resNx_branch1``
                and ``_branch2a/b/c`` convolutions, ``bn*``/``scale*`` in place, Eltwise SUM
  squeezenet11  SqueezeNet v1.1 (Iandola et al.), fire modules, global AVE pool
  mobilenet_v1  MobileNet v1 1.0-224 (Howard et al.) in the common Caffe port's layout:
                depthwise steps are Convolution with group == channels, BatchNorm + Scale
  dex_age       DEX (Rothe et al., IMDB-WIKI): VGG-16 with ``fc8-101`` and softmax (age 0..100)
  dex_gender    the DEX gender net: the same VGG-16 with ``fc8-2``
  fcn8s         FCN-8s (Long, Shelhamer, Darrell), PASCAL VOC deploy: conv1_1 padded by 100,
                fc6/fc7 as convolutions, three Deconvolution upsamplings, Crop with offsets
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from caffe_compat.proto import caffe_pb2

DATA = Path(__file__).resolve().parent / "data"


def _fill(message: Any, values: dict[str, Any]) -> None:
    """Set protobuf fields from a dict (nested dicts for messages, lists for repeated fields)."""
    for key, value in values.items():
        field = message.DESCRIPTOR.fields_by_name[key]
        if isinstance(value, dict):
            _fill(getattr(message, key), value)
        elif field.is_repeated:
            getattr(message, key).extend(value if isinstance(value, list) else [value])
        else:
            setattr(message, key, value)


class Net:
    """A deploy net under construction: an Input layer, then layers in execution order."""

    def __init__(self, name: str, shape: tuple[int, ...], input_name: str = "data") -> None:
        self.proto = caffe_pb2.NetParameter(name=name)
        self.layer(input_name, "Input", [], [input_name])
        self.proto.layer[0].input_param.shape.add().dim.extend(shape)

    def layer(self, name: str, kind: str, bottoms: list[str], tops: list[str], **params) -> str:
        layer = self.proto.layer.add(name=name, type=kind)
        layer.bottom.extend(bottoms)
        layer.top.extend(tops)
        _fill(layer, params)
        return tops[0] if tops else ""

    # Shorthands for the layers every net uses.
    def conv(self, name: str, bottom: str, top: str | None = None, **conv) -> str:
        return self.layer(name, "Convolution", [bottom], [top or name], convolution_param=conv)

    def relu(self, name: str, blob: str) -> str:
        return self.layer(name, "ReLU", [blob], [blob])

    def pool(self, name: str, bottom: str, method: str, **pool) -> str:
        pool["pool"] = caffe_pb2.PoolingParameter.PoolMethod.Value(method)
        return self.layer(name, "Pooling", [bottom], [name], pooling_param=pool)

    def lrn(self, name: str, bottom: str) -> str:
        return self.layer(
            name, "LRN", [bottom], [name], lrn_param={"local_size": 5, "alpha": 1e-4, "beta": 0.75}
        )

    def fc(self, name: str, bottom: str, outputs: int) -> str:
        return self.layer(
            name, "InnerProduct", [bottom], [name], inner_product_param={"num_output": outputs}
        )

    def dropout(self, name: str, blob: str, ratio: float) -> str:
        return self.layer(name, "Dropout", [blob], [blob], dropout_param={"dropout_ratio": ratio})

    def softmax(self, bottom: str) -> str:
        return self.layer("prob", "Softmax", [bottom], ["prob"])

    def text(self) -> str:
        return text_format.MessageToString(self.proto)


def caffenet() -> Net:
    n = Net("CaffeNet", (1, 3, 227, 227))
    x = n.conv("conv1", "data", num_output=96, kernel_size=11, stride=4)
    n.relu("relu1", x)
    x = n.lrn("norm1", n.pool("pool1", x, "MAX", kernel_size=3, stride=2))
    x = n.conv("conv2", x, num_output=256, pad=2, kernel_size=5, group=2)
    n.relu("relu2", x)
    x = n.lrn("norm2", n.pool("pool2", x, "MAX", kernel_size=3, stride=2))
    x = n.conv("conv3", x, num_output=384, pad=1, kernel_size=3)
    n.relu("relu3", x)
    x = n.conv("conv4", x, num_output=384, pad=1, kernel_size=3, group=2)
    n.relu("relu4", x)
    x = n.conv("conv5", x, num_output=256, pad=1, kernel_size=3, group=2)
    n.relu("relu5", x)
    x = n.pool("pool5", x, "MAX", kernel_size=3, stride=2)
    _classifier(n, x, "fc8", 1000)
    return n


def _classifier(n: Net, x: str, head: str, classes: int) -> None:
    """fc6 - relu - drop - fc7 - relu - drop - head - prob, as in AlexNet and VGG."""
    for i in (6, 7):
        x = n.fc(f"fc{i}", x, 4096)
        n.relu(f"relu{i}", x)
        n.dropout(f"drop{i}", x, 0.5)
    n.softmax(n.fc(head, x, classes))


def _vgg16_features(n: Net, first_pad: int = 1) -> str:
    x = "data"
    for block, (convs, width) in enumerate([(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)], 1):
        for i in range(1, convs + 1):
            pad = first_pad if (block, i) == (1, 1) else 1
            x = n.conv(f"conv{block}_{i}", x, num_output=width, pad=pad, kernel_size=3)
            n.relu(f"relu{block}_{i}", x)
        x = n.pool(f"pool{block}", x, "MAX", kernel_size=2, stride=2)
    return x


def vgg16() -> Net:
    n = Net("VGG_ILSVRC_16_layers", (1, 3, 224, 224))
    _classifier(n, _vgg16_features(n), "fc8", 1000)
    return n


def dex_age() -> Net:
    n = Net("DEX_VGG16_age", (1, 3, 224, 224))
    _classifier(n, _vgg16_features(n), "fc8-101", 101)
    return n


def dex_gender() -> Net:
    n = Net("DEX_VGG16_gender", (1, 3, 224, 224))
    _classifier(n, _vgg16_features(n), "fc8-2", 2)
    return n


def _inception(n: Net, name: str, x: str, widths: tuple[int, int, int, int, int, int]) -> str:
    """One GoogLeNet inception module: 1x1 | 1x1-3x3 | 1x1-5x5 | 3x3 max pool-1x1, concatenated."""
    c1, r3, c3, r5, c5, proj = widths
    p = f"{name}/"
    branches = [n.conv(p + "1x1", x, num_output=c1, kernel_size=1)]
    n.relu(p + "relu_1x1", branches[-1])
    for size, reduce, width, pad in (("3x3", r3, c3, 1), ("5x5", r5, c5, 2)):
        y = n.conv(f"{p}{size}_reduce", x, num_output=reduce, kernel_size=1)
        n.relu(f"{p}relu_{size}_reduce", y)
        y = n.conv(p + size, y, num_output=width, pad=pad, kernel_size=int(size[0]))
        n.relu(f"{p}relu_{size}", y)
        branches.append(y)
    y = n.pool(p + "pool", x, "MAX", kernel_size=3, stride=1, pad=1)
    y = n.conv(p + "pool_proj", y, num_output=proj, kernel_size=1)
    n.relu(p + "relu_pool_proj", y)
    branches.append(y)
    return n.layer(p + "output", "Concat", branches, [p + "output"])


def googlenet() -> Net:
    n = Net("GoogleNet", (1, 3, 224, 224))
    x = n.conv("conv1/7x7_s2", "data", num_output=64, pad=3, kernel_size=7, stride=2)
    n.relu("conv1/relu_7x7", x)
    x = n.lrn("pool1/norm1", n.pool("pool1/3x3_s2", x, "MAX", kernel_size=3, stride=2))
    x = n.conv("conv2/3x3_reduce", x, num_output=64, kernel_size=1)
    n.relu("conv2/relu_3x3_reduce", x)
    x = n.conv("conv2/3x3", x, num_output=192, pad=1, kernel_size=3)
    n.relu("conv2/relu_3x3", x)
    x = n.pool("pool2/3x3_s2", n.lrn("conv2/norm2", x), "MAX", kernel_size=3, stride=2)
    stages = {
        "3": {"a": (64, 96, 128, 16, 32, 32), "b": (128, 128, 192, 32, 96, 64)},
        "4": {
            "a": (192, 96, 208, 16, 48, 64),
            "b": (160, 112, 224, 24, 64, 64),
            "c": (128, 128, 256, 24, 64, 64),
            "d": (112, 144, 288, 32, 64, 64),
            "e": (256, 160, 320, 32, 128, 128),
        },
        "5": {"a": (256, 160, 320, 32, 128, 128), "b": (384, 192, 384, 48, 128, 128)},
    }
    for stage, modules in stages.items():
        for letter, widths in modules.items():
            x = _inception(n, f"inception_{stage}{letter}", x, widths)
        if stage != "5":
            x = n.pool(f"pool{stage}/3x3_s2", x, "MAX", kernel_size=3, stride=2)
    x = n.pool("pool5/7x7_s1", x, "AVE", kernel_size=7, stride=1)
    n.dropout("pool5/drop_7x7_s1", x, 0.4)
    n.softmax(n.fc("loss3/classifier", x, 1000))
    return n


def _conv_bn(n: Net, name: str, bn: str, scale: str, bottom: str, **conv) -> str:
    """Convolution, then BatchNorm (stored statistics) and Scale with bias, both in place."""
    x = n.conv(name, bottom, **conv)
    n.layer(bn, "BatchNorm", [x], [x], batch_norm_param={"use_global_stats": True})
    n.layer(scale, "Scale", [x], [x], scale_param={"bias_term": True})
    return x


def _res_unit(
    n: Net, block: str, branch: str, bottom: str, outputs: int, kernel: int, stride: int = 1
) -> str:
    """One bias-free ResNet convolution ``res{block}_{branch}`` with its bn/scale pair."""
    return _conv_bn(
        n,
        f"res{block}_{branch}",
        f"bn{block}_{branch}",
        f"scale{block}_{branch}",
        bottom,
        num_output=outputs,
        kernel_size=kernel,
        pad=kernel // 2,
        stride=stride,
        bias_term=False,
    )


def resnet(name: str, blocks: tuple[int, int, int, int]) -> Net:
    """A ResNet in the released Caffe deploy layout: stages of bottleneck units named
    ``res2a``.. (letters while a stage has up to 6 units, as ResNet-50; ``a, b1, b2``.. in
    ResNet-101/152's longer stages)."""
    n = Net(name, (1, 3, 224, 224))
    x = _conv_bn(
        n, "conv1", "bn_conv1", "scale_conv1", "data", num_output=64, kernel_size=7, pad=3, stride=2
    )
    n.relu("conv1_relu", x)
    x = n.pool("pool1", x, "MAX", kernel_size=3, stride=2)
    lettered = max(blocks) <= 6
    for stage, (units, width) in enumerate(zip(blocks, (64, 128, 256, 512)), 2):
        for b in range(units):
            if lettered or units == 3:
                block = f"{stage}{chr(ord('a') + b)}"
            else:
                block = f"{stage}{'a' if b == 0 else f'b{b}'}"
            stride = 2 if b == 0 and stage > 2 else 1
            shortcut = _res_unit(n, block, "branch1", x, 4 * width, 1, stride) if b == 0 else x
            y = _res_unit(n, block, "branch2a", x, width, 1, stride)
            n.relu(f"res{block}_branch2a_relu", y)
            y = _res_unit(n, block, "branch2b", y, width, 3)
            n.relu(f"res{block}_branch2b_relu", y)
            y = _res_unit(n, block, "branch2c", y, 4 * width, 1)
            x = n.layer(f"res{block}", "Eltwise", [shortcut, y], [f"res{block}"])
            n.relu(f"res{block}_relu", x)
    x = n.pool("pool5", x, "AVE", kernel_size=7, stride=1)
    n.softmax(n.fc("fc1000", x, 1000))
    return n


def resnet50() -> Net:
    return resnet("ResNet-50", (3, 4, 6, 3))


def squeezenet11() -> Net:
    n = Net("SqueezeNet_v1.1", (1, 3, 227, 227))
    x = n.conv("conv1", "data", num_output=64, kernel_size=3, stride=2)
    n.relu("relu_conv1", x)
    x = n.pool("pool1", x, "MAX", kernel_size=3, stride=2)
    fires = {2: (16, 64), 3: (16, 64), 4: (32, 128), 5: (32, 128)}
    fires.update({6: (48, 192), 7: (48, 192), 8: (64, 256), 9: (64, 256)})
    for index, (squeeze, expand) in fires.items():
        p = f"fire{index}/"
        s = n.conv(p + "squeeze1x1", x, num_output=squeeze, kernel_size=1)
        n.relu(p + "relu_squeeze1x1", s)
        e1 = n.conv(p + "expand1x1", s, num_output=expand, kernel_size=1)
        n.relu(p + "relu_expand1x1", e1)
        e3 = n.conv(p + "expand3x3", s, num_output=expand, pad=1, kernel_size=3)
        n.relu(p + "relu_expand3x3", e3)
        x = n.layer(p + "concat", "Concat", [e1, e3], [p + "concat"])
        if index in (3, 5):
            x = n.pool(f"pool{index}", x, "MAX", kernel_size=3, stride=2)
    n.dropout("drop9", x, 0.5)
    x = n.conv("conv10", x, num_output=1000, kernel_size=1)
    n.relu("relu_conv10", x)
    x = n.pool("pool10", x, "AVE", global_pooling=True)
    n.softmax(x)
    return n


def mobilenet_v1() -> Net:
    n = Net("MobileNet", (1, 3, 224, 224))

    def unit(name: str, relu: str, bottom: str, **conv) -> str:
        x = n.conv(name, bottom, bias_term=False, **conv)
        bn = n.layer(
            f"{name}/bn",
            "BatchNorm",
            [x],
            [x],
            batch_norm_param={"use_global_stats": True, "eps": 1e-5},
        )
        n.layer(f"{name}/scale", "Scale", [bn], [bn], scale_param={"bias_term": True})
        return n.relu(relu, x)

    x = unit("conv1", "relu1", "data", num_output=32, pad=1, kernel_size=3, stride=2)
    widths = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1)]
    widths += [(256, 512, 2)] + [(512, 512, 1)] * 5 + [(512, 1024, 2), (1024, 1024, 1)]
    names = ["2_1", "2_2", "3_1", "3_2", "4_1", "4_2", "5_1", "5_2", "5_3", "5_4", "5_5", "5_6"]
    names.append("6")
    for name, (cin, cout, stride) in zip(names, widths):
        x = unit(
            f"conv{name}/dw",
            f"relu{name}/dw",
            x,
            num_output=cin,
            pad=1,
            kernel_size=3,
            group=cin,
            stride=stride,
        )
        x = unit(f"conv{name}/sep", f"relu{name}/sep", x, num_output=cout, kernel_size=1)
    x = n.pool("pool6", x, "AVE", global_pooling=True)
    n.softmax(n.conv("fc7", x, num_output=1000, kernel_size=1))
    return n


def fcn8s() -> Net:
    n = Net("FCN-8s", (1, 3, 500, 500))
    pools = {}
    x = "data"
    for block, (convs, width) in enumerate([(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)], 1):
        for i in range(1, convs + 1):
            pad = 100 if (block, i) == (1, 1) else 1
            x = n.conv(f"conv{block}_{i}", x, num_output=width, pad=pad, kernel_size=3)
            n.relu(f"relu{block}_{i}", x)
        x = pools[block] = n.pool(f"pool{block}", x, "MAX", kernel_size=2, stride=2)
    x = n.conv("fc6", x, num_output=4096, kernel_size=7)
    n.relu("relu6", x)
    n.dropout("drop6", x, 0.5)
    x = n.conv("fc7", x, num_output=4096, kernel_size=1)
    n.relu("relu7", x)
    n.dropout("drop7", x, 0.5)
    x = n.conv("score_fr", x, num_output=21, kernel_size=1)

    def upscore(name: str, bottom: str, kernel: int, stride: int) -> str:
        conv = {"num_output": 21, "bias_term": False, "kernel_size": kernel, "stride": stride}
        return n.layer(name, "Deconvolution", [bottom], [name], convolution_param=conv)

    def crop(name: str, bottom: str, like: str, offset: int) -> str:
        return n.layer(
            name, "Crop", [bottom, like], [name], crop_param={"axis": 2, "offset": offset}
        )

    x = upscore("upscore2", x, 4, 2)
    side = crop("score_pool4c", n.conv("score_pool4", pools[4], num_output=21, kernel_size=1), x, 5)
    x = n.layer("fuse_pool4", "Eltwise", [x, side], ["fuse_pool4"])
    x = upscore("upscore_pool4", x, 4, 2)
    side = crop("score_pool3c", n.conv("score_pool3", pools[3], num_output=21, kernel_size=1), x, 9)
    x = n.layer("fuse_pool3", "Eltwise", [x, side], ["fuse_pool3"])
    crop("score", upscore("upscore8", x, 16, 8), "data", 31)
    return n


NETS: dict[str, Callable[[], Net]] = {
    "caffenet": caffenet,
    "googlenet": googlenet,
    "vgg16": vgg16,
    "resnet50": resnet50,
    "squeezenet11": squeezenet11,
    "mobilenet_v1": mobilenet_v1,
    "dex_age": dex_age,
    "dex_gender": dex_gender,
    "fcn8s": fcn8s,
}

HEADER = (
    "# {name}: caffe-compat's own deploy definition of the published architecture.\n"
    "# Generated by tests/nets/make_prototxts.py (edit that, then run it).\n"
)


def render(name: str) -> str:
    return HEADER.format(name=name) + NETS[name]().text()


def main() -> None:
    DATA.mkdir(exist_ok=True)
    for name in NETS:
        (DATA / f"{name}.prototxt").write_text(render(name), encoding="utf-8")
        print(f"wrote {DATA / name}.prototxt")


if __name__ == "__main__":
    main()

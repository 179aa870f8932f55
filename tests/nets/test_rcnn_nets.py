"""Small nets shaped like the detection forks' published test nets, end to end through the CLI
with synthesized weights (synth -> convert -> verify): a Faster R-CNN (py-faster-rcnn's
test.prototxt layout: RPN, the Python proposal layer, ROIPooling, fc heads) and an R-FCN
(caffe-rfcn's: RPN, OpenCV's Proposal type, position-sensitive score maps, PSROIPooling, average
voting). Each verify compares PyTorch and ONNX Runtime with the float64 reference (and OpenCV 4
on the layers before the proposals, where it reads the net)."""

from __future__ import annotations

import json

import pytest

from caffe_compat.cli.main import main

BACKBONE = """
input: "data"
input_shape { dim: 1 dim: 3 dim: 64 dim: 80 }
input: "im_info"
input_shape { dim: 1 dim: 3 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2" convolution_param { num_output: 16 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "conv3" type: "Convolution" bottom: "conv2" top: "conv3" convolution_param { num_output: 16 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" }
layer { name: "rpn_conv/3x3" type: "Convolution" bottom: "conv3" top: "rpn/output" convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }
layer { name: "rpn_relu/3x3" type: "ReLU" bottom: "rpn/output" top: "rpn/output" }
layer { name: "rpn_cls_score" type: "Convolution" bottom: "rpn/output" top: "rpn_cls_score" convolution_param { num_output: 18 kernel_size: 1 } }
layer { name: "rpn_bbox_pred" type: "Convolution" bottom: "rpn/output" top: "rpn_bbox_pred" convolution_param { num_output: 36 kernel_size: 1 } }
layer { name: "rpn_cls_score_reshape" type: "Reshape" bottom: "rpn_cls_score" top: "rpn_cls_score_reshape" reshape_param { shape { dim: 0 dim: 2 dim: -1 dim: 0 } } }
layer { name: "rpn_cls_prob" type: "Softmax" bottom: "rpn_cls_score_reshape" top: "rpn_cls_prob" }
layer { name: "rpn_cls_prob_reshape" type: "Reshape" bottom: "rpn_cls_prob" top: "rpn_cls_prob_reshape" reshape_param { shape { dim: 0 dim: 18 dim: -1 dim: 0 } } }
"""

FASTER_RCNN = (
    BACKBONE
    + """
layer {
  name: "proposal" type: "Python"
  bottom: "rpn_cls_prob_reshape" bottom: "rpn_bbox_pred" bottom: "im_info" top: "rois"
  python_param { module: "rpn.proposal_layer" layer: "ProposalLayer" param_str: "'feat_stride': 8\\n'scales': [1, 2, 4]" }
}
layer { name: "roi_pool5" type: "ROIPooling" bottom: "conv3" bottom: "rois" top: "pool5" roi_pooling_param { pooled_w: 3 pooled_h: 3 spatial_scale: 0.125 } }
layer { name: "fc6" type: "InnerProduct" bottom: "pool5" top: "fc6" inner_product_param { num_output: 32 } }
layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }
layer { name: "cls_score" type: "InnerProduct" bottom: "fc6" top: "cls_score" inner_product_param { num_output: 5 } }
layer { name: "bbox_pred" type: "InnerProduct" bottom: "fc6" top: "bbox_pred" inner_product_param { num_output: 20 } }
layer { name: "cls_prob" type: "Softmax" bottom: "cls_score" top: "cls_prob" }
"""
)

RFCN = (
    BACKBONE
    + """
layer {
  name: "proposal" type: "Proposal"
  bottom: "rpn_cls_prob_reshape" bottom: "rpn_bbox_pred" bottom: "im_info" top: "rois"
  proposal_param { feat_stride: 8 ratio: 0.5 ratio: 1 ratio: 2 scale: 1 scale: 2 scale: 4 post_nms_topn: 40 }
}
layer { name: "rfcn_cls" type: "Convolution" bottom: "conv3" top: "rfcn_cls" convolution_param { num_output: 45 kernel_size: 1 } }
layer { name: "rfcn_bbox" type: "Convolution" bottom: "conv3" top: "rfcn_bbox" convolution_param { num_output: 72 kernel_size: 1 } }
layer { name: "psroipooled_cls_rois" type: "PSROIPooling" bottom: "rfcn_cls" bottom: "rois" top: "psroipooled_cls_rois" psroi_pooling_param { spatial_scale: 0.125 output_dim: 5 group_size: 3 } }
layer { name: "ave_cls_score_rois" type: "Pooling" bottom: "psroipooled_cls_rois" top: "cls_score" pooling_param { pool: AVE kernel_size: 3 stride: 3 } }
layer { name: "psroipooled_loc_rois" type: "PSROIPooling" bottom: "rfcn_bbox" bottom: "rois" top: "psroipooled_loc_rois" psroi_pooling_param { spatial_scale: 0.125 output_dim: 8 group_size: 3 } }
layer { name: "ave_bbox_pred_rois" type: "Pooling" bottom: "psroipooled_loc_rois" top: "bbox_pred" pooling_param { pool: AVE kernel_size: 3 stride: 3 } }
layer { name: "cls_prob_pre" type: "Softmax" bottom: "cls_score" top: "cls_prob_pre" }
layer { name: "cls_prob_reshape" type: "Reshape" bottom: "cls_prob_pre" top: "cls_prob" reshape_param { shape { dim: -1 dim: 5 } } }
"""
)


@pytest.mark.slow  # about 10 s each (three CLI runs)
@pytest.mark.parametrize("name, prototxt", [("faster_rcnn", FASTER_RCNN), ("rfcn", RFCN)])
def test_detection_fork_net_converts_and_verifies(tmp_path, capsys, name, prototxt):
    net = tmp_path / f"{name}_test.prototxt"
    net.write_text(prototxt)
    weights = tmp_path / f"{name}.caffemodel"
    assert main(["synth", str(net), "-o", str(weights)]) == 0
    assert main(["convert", str(net), str(weights), "--to", "onnx", "-o", str(tmp_path / "n")]) == 0
    assert [p.stat().st_size > 0 for p in tmp_path.glob("n*.onnx")] == [True]
    capsys.readouterr()
    assert main(["verify", str(net), str(weights), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {(r["blob"], r["backend"], r["reference"]) for r in report["comparisons"]}
    for blob in ("rois", "cls_prob", "bbox_pred"):
        for backend in ("torch-cpu", "onnxruntime-cpu"):
            assert (blob, backend, "float64") in rows, (blob, backend)

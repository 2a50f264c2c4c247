"""The part of Caffe's ``caffe.proto`` (proto2, BVLC field numbers) that SqueezeNet needs.

Declared here as data and built at import time with ``google.protobuf.descriptor_pb2`` in a
private descriptor pool (so it never collides with a user's compiled ``caffe_pb2``).  Works
with protobuf 3.20.x (``MessageFactory().GetPrototype``) and 4.x and later
(``message_factory.GetMessageClass``).  Fields not declared here are kept as unknown fields
when parsing binary files and skipped when parsing text.

Message classes exported: ``NetParameter``, ``LayerParameter``, ``V1LayerParameter``,
``BlobProto``, ``BlobShape``, ``ConvolutionParameter``, ``PoolingParameter``,
``EltwiseParameter``, ``ConcatParameter``, ``DropoutParameter``, ``InputParameter``,
``ReLUParameter``, ``SoftmaxParameter``, ``FillerParameter``, ``ParamSpec``,
``NetStateRule``, ``TransformationParameter``.

Blob layout: ``BlobProto.shape.dim`` (or the legacy ``num, channels, height, width``) gives
the shape; ``data`` (float32) or ``double_data`` (float64) holds the values in C order, so a
convolution weight blob is OIHW ``[out, in, kH, kW]`` and a bias blob ``[out]`` (legacy
files: ``[1, 1, 1, out]``).
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2

from ._protobuf import F as _F
from ._protobuf import add_enums, message_classes, set_type

PACKAGE = "squeezenet_ports.caffe"


# V1LayerParameter.LayerType (the full enum, so that an unsupported V1 type can be named).
V1_LAYER_TYPES = {
    "NONE": 0, "ABSVAL": 35, "ACCURACY": 1, "ARGMAX": 30, "BNLL": 2, "CONCAT": 3,
    "CONTRASTIVE_LOSS": 37, "CONVOLUTION": 4, "DATA": 5, "DECONVOLUTION": 39, "DROPOUT": 6,
    "DUMMY_DATA": 32, "EUCLIDEAN_LOSS": 7, "ELTWISE": 25, "EXP": 38, "FLATTEN": 8,
    "HDF5_DATA": 9, "HDF5_OUTPUT": 10, "HINGE_LOSS": 28, "IM2COL": 11, "IMAGE_DATA": 12,
    "INFOGAIN_LOSS": 13, "INNER_PRODUCT": 14, "LRN": 15, "MEMORY_DATA": 29,
    "MULTINOMIAL_LOGISTIC_LOSS": 16, "MVN": 34, "POOLING": 17, "POWER": 26, "RELU": 18,
    "SIGMOID": 19, "SIGMOID_CROSS_ENTROPY_LOSS": 27, "SILENCE": 36, "SOFTMAX": 20,
    "SOFTMAX_LOSS": 21, "SPLIT": 22, "SLICE": 33, "TANH": 23, "WINDOW_DATA": 24,
    "THRESHOLD": 31,
}

# message -> [(field, number, type or message/enum name, label, default)]
# label: "opt" | "rep" | "packed" (repeated, packed on write).
_MESSAGES: dict[str, list[tuple]] = {
    "BlobShape": [("dim", 1, "int64", "packed", None)],
    "BlobProto": [
        ("shape", 7, "BlobShape", "opt", None),
        ("data", 5, "float", "packed", None),
        ("double_data", 8, "double", "packed", None),
        ("num", 1, "int64", "opt", "0"),
        ("channels", 2, "int64", "opt", "0"),
        ("height", 3, "int64", "opt", "0"),
        ("width", 4, "int64", "opt", "0"),
    ],
    "FillerParameter": [
        ("type", 1, "string", "opt", "constant"),
        ("value", 2, "float", "opt", "0"),
        ("min", 3, "float", "opt", "0"),
        ("max", 4, "float", "opt", "1"),
        ("mean", 5, "float", "opt", "0"),
        ("std", 6, "float", "opt", "1"),
    ],
    "NetStateRule": [
        ("phase", 1, ".Phase", "opt", None),
        ("min_level", 2, "int32", "opt", None),
        ("max_level", 3, "int32", "opt", None),
        ("stage", 4, "string", "rep", None),
        ("not_stage", 5, "string", "rep", None),
    ],
    "ParamSpec": [
        ("name", 1, "string", "opt", None),
        ("lr_mult", 3, "float", "opt", "1"),
        ("decay_mult", 4, "float", "opt", "1"),
    ],
    "TransformationParameter": [
        ("scale", 1, "float", "opt", "1"),
        ("mirror", 2, "bool", "opt", "false"),
        ("crop_size", 3, "uint32", "opt", "0"),
        ("mean_file", 4, "string", "opt", None),
        ("mean_value", 5, "float", "rep", None),
    ],
    "ConvolutionParameter": [
        ("num_output", 1, "uint32", "opt", None),
        ("bias_term", 2, "bool", "opt", "true"),
        ("pad", 3, "uint32", "rep", None),
        ("kernel_size", 4, "uint32", "rep", None),
        ("group", 5, "uint32", "opt", "1"),
        ("stride", 6, "uint32", "rep", None),
        ("weight_filler", 7, "FillerParameter", "opt", None),
        ("bias_filler", 8, "FillerParameter", "opt", None),
        ("pad_h", 9, "uint32", "opt", "0"),
        ("pad_w", 10, "uint32", "opt", "0"),
        ("kernel_h", 11, "uint32", "opt", None),
        ("kernel_w", 12, "uint32", "opt", None),
        ("stride_h", 13, "uint32", "opt", None),
        ("stride_w", 14, "uint32", "opt", None),
        ("axis", 16, "int32", "opt", "1"),
        ("dilation", 18, "uint32", "rep", None),
    ],
    "PoolingParameter": [
        ("pool", 1, ".PoolingParameter.PoolMethod", "opt", "MAX"),
        ("pad", 4, "uint32", "opt", "0"),
        ("pad_h", 9, "uint32", "opt", "0"),
        ("pad_w", 10, "uint32", "opt", "0"),
        ("kernel_size", 2, "uint32", "opt", None),
        ("kernel_h", 5, "uint32", "opt", None),
        ("kernel_w", 6, "uint32", "opt", None),
        ("stride", 3, "uint32", "opt", "1"),
        ("stride_h", 7, "uint32", "opt", None),
        ("stride_w", 8, "uint32", "opt", None),
        ("global_pooling", 12, "bool", "opt", "false"),
        ("round_mode", 13, ".PoolingParameter.RoundMode", "opt", "CEIL"),
    ],
    "EltwiseParameter": [
        ("operation", 1, ".EltwiseParameter.EltwiseOp", "opt", "SUM"),
        ("coeff", 2, "float", "rep", None),
    ],
    "ConcatParameter": [
        ("concat_dim", 1, "uint32", "opt", "1"),
        ("axis", 2, "int32", "opt", "1"),
    ],
    "DropoutParameter": [("dropout_ratio", 1, "float", "opt", "0.5")],
    "InputParameter": [("shape", 1, "BlobShape", "rep", None)],
    "ReLUParameter": [("negative_slope", 1, "float", "opt", "0")],
    "SoftmaxParameter": [("axis", 2, "int32", "opt", "1")],
    "LayerParameter": [
        ("name", 1, "string", "opt", None),
        ("type", 2, "string", "opt", None),
        ("bottom", 3, "string", "rep", None),
        ("top", 4, "string", "rep", None),
        ("phase", 10, ".Phase", "opt", None),
        ("param", 6, "ParamSpec", "rep", None),
        ("blobs", 7, "BlobProto", "rep", None),
        ("include", 8, "NetStateRule", "rep", None),
        ("exclude", 9, "NetStateRule", "rep", None),
        ("transform_param", 100, "TransformationParameter", "opt", None),
        ("concat_param", 104, "ConcatParameter", "opt", None),
        ("convolution_param", 106, "ConvolutionParameter", "opt", None),
        ("dropout_param", 108, "DropoutParameter", "opt", None),
        ("eltwise_param", 110, "EltwiseParameter", "opt", None),
        ("pooling_param", 121, "PoolingParameter", "opt", None),
        ("relu_param", 123, "ReLUParameter", "opt", None),
        ("softmax_param", 125, "SoftmaxParameter", "opt", None),
        ("input_param", 143, "InputParameter", "opt", None),
    ],
    "V1LayerParameter": [
        ("bottom", 2, "string", "rep", None),
        ("top", 3, "string", "rep", None),
        ("name", 4, "string", "opt", None),
        ("include", 32, "NetStateRule", "rep", None),
        ("exclude", 33, "NetStateRule", "rep", None),
        ("type", 5, ".V1LayerParameter.LayerType", "opt", None),
        ("blobs", 6, "BlobProto", "rep", None),
        ("blobs_lr", 7, "float", "rep", None),
        ("weight_decay", 8, "float", "rep", None),
        ("concat_param", 9, "ConcatParameter", "opt", None),
        ("convolution_param", 10, "ConvolutionParameter", "opt", None),
        ("dropout_param", 12, "DropoutParameter", "opt", None),
        ("pooling_param", 19, "PoolingParameter", "opt", None),
        ("eltwise_param", 24, "EltwiseParameter", "opt", None),
        ("relu_param", 30, "ReLUParameter", "opt", None),
        ("transform_param", 36, "TransformationParameter", "opt", None),
        ("softmax_param", 39, "SoftmaxParameter", "opt", None),
    ],
    "NetParameter": [
        ("name", 1, "string", "opt", None),
        ("input", 3, "string", "rep", None),
        ("input_shape", 8, "BlobShape", "rep", None),
        ("input_dim", 4, "int64", "rep", None),
        ("layer", 100, "LayerParameter", "rep", None),
        ("layers", 2, "V1LayerParameter", "rep", None),
    ],
}

# Enums: top-level or nested ("Message.Enum") -> {value name: number}.
_ENUMS: dict[str, dict[str, int]] = {
    "Phase": {"TRAIN": 0, "TEST": 1},
    "PoolingParameter.PoolMethod": {"MAX": 0, "AVE": 1, "STOCHASTIC": 2},
    "PoolingParameter.RoundMode": {"CEIL": 0, "FLOOR": 1},
    "EltwiseParameter.EltwiseOp": {"PROD": 0, "SUM": 1, "MAX": 2},
    "V1LayerParameter.LayerType": V1_LAYER_TYPES,
}


def _file_proto() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(name="squeezenet_ports_caffe.proto",
                                             package=PACKAGE, syntax="proto2")

    messages = {}
    for msg_name, fields in _MESSAGES.items():
        msg = fdp.message_type.add(name=msg_name)
        messages[msg_name] = msg
        for fname, number, ftype, label, default in fields:
            field = msg.field.add(name=fname, number=number)
            field.label = _F.LABEL_OPTIONAL if label == "opt" else _F.LABEL_REPEATED
            if label == "packed":
                field.options.packed = True
            set_type(field, ftype, PACKAGE)
            if default is not None:
                field.default_value = default
    add_enums(fdp, messages, _ENUMS)
    return fdp


_CLASSES = message_classes(_file_proto(), _MESSAGES)
NetParameter = _CLASSES["NetParameter"]
LayerParameter = _CLASSES["LayerParameter"]
V1LayerParameter = _CLASSES["V1LayerParameter"]
BlobProto = _CLASSES["BlobProto"]
BlobShape = _CLASSES["BlobShape"]
ConvolutionParameter = _CLASSES["ConvolutionParameter"]
PoolingParameter = _CLASSES["PoolingParameter"]
EltwiseParameter = _CLASSES["EltwiseParameter"]
ConcatParameter = _CLASSES["ConcatParameter"]
DropoutParameter = _CLASSES["DropoutParameter"]
InputParameter = _CLASSES["InputParameter"]
ReLUParameter = _CLASSES["ReLUParameter"]
SoftmaxParameter = _CLASSES["SoftmaxParameter"]
FillerParameter = _CLASSES["FillerParameter"]
ParamSpec = _CLASSES["ParamSpec"]
NetStateRule = _CLASSES["NetStateRule"]
TransformationParameter = _CLASSES["TransformationParameter"]

# V1 enum value -> the V2 type string of the same layer (for the layers SqueezeNet uses).
V1_TO_V2_TYPE = {
    "CONVOLUTION": "Convolution", "RELU": "ReLU", "POOLING": "Pooling", "CONCAT": "Concat",
    "DROPOUT": "Dropout", "ELTWISE": "Eltwise", "SOFTMAX": "Softmax", "DATA": "Data",
    "ACCURACY": "Accuracy", "SOFTMAX_LOSS": "SoftmaxWithLoss", "IMAGE_DATA": "ImageData",
    "SPLIT": "Split",
}
V2_TO_V1_TYPE = {v: k for k, v in V1_TO_V2_TYPE.items()}

"""The part of Core ML's protobuf schema (``Model.proto``, ``FeatureTypes.proto``,
``NeuralNetwork.proto``, ``MIL.proto``; proto3, field numbers of coremltools 9.0) that a
SqueezeNet needs.

Declared here as data and built at import time with ``google.protobuf.descriptor_pb2`` in a
private descriptor pool, as :mod:`ports.formats.caffe_schema` does (so it never collides with
coremltools' own compiled ``Model_pb2``, and needs neither coremltools nor its C++
libraries).  Fields and layer types not declared here are kept as unknown fields when
parsing, and written back unchanged.

Message classes exported (Core ML's names; the MIL messages, ``CoreML.Specification.MILSpec``
in Core ML, sit in the same private package): ``Model``, ``ModelDescription``,
``FeatureDescription``, ``FeatureType``, ``ArrayFeatureType``, ``Metadata``,
``NeuralNetwork``, ``NeuralNetworkLayer``, ``WeightParams``, the layer parameters of
convolution, activation, pooling, concat, add, flatten, flattenTo2D, reshape(Static),
squeeze and reduceMean, and MIL's ``Program``, ``Function``, ``Block``, ``Operation``,
``Argument``, ``NamedValueType``, ``ValueType``, ``TensorType``, ``Dimension``, ``Value``,
``TensorValue`` and the rest of its value types.  :data:`CLASSES` maps every declared
message (nested ones as ``"Outer.Inner"``) to its class; :data:`DECLARED` is the
declaration itself (``tests`` compare it with coremltools' descriptors).
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2

from ._protobuf import F as _F
from ._protobuf import add_enums, message_classes, set_type

PACKAGE = "squeezenet_ports.coreml"


# message -> [(field, number, type, label, oneof)]
#   type: a scalar above, a message name, ".Enum" (an enum name), or "map<K,V>";
#   label: "opt" | "rep" (repeated scalars are packed: proto3); oneof: its name or None.
# Messages are listed parents first; a nested message is "Outer.Inner".
_L = "layer"
_MESSAGES: dict[str, list[tuple]] = {
    # --- Model.proto --------------------------------------------------------------------------
    "Model": [
        ("specificationVersion", 1, "int32", "opt", None),
        ("description", 2, "ModelDescription", "opt", None),
        ("isUpdatable", 10, "bool", "opt", None),
        ("neuralNetwork", 500, "NeuralNetwork", "opt", "Type"),
        ("mlProgram", 502, "Program", "opt", "Type"),
    ],
    "ModelDescription": [
        ("input", 1, "FeatureDescription", "rep", None),
        ("output", 10, "FeatureDescription", "rep", None),
        ("predictedFeatureName", 11, "string", "opt", None),
        ("predictedProbabilitiesName", 12, "string", "opt", None),
        ("state", 13, "FeatureDescription", "rep", None),
        ("trainingInput", 50, "FeatureDescription", "rep", None),
        ("metadata", 100, "Metadata", "opt", None),
    ],
    "Metadata": [
        ("shortDescription", 1, "string", "opt", None),
        ("versionString", 2, "string", "opt", None),
        ("author", 3, "string", "opt", None),
        ("license", 4, "string", "opt", None),
        ("userDefined", 100, "map<string,string>", "rep", None),
    ],
    "FeatureDescription": [
        ("name", 1, "string", "opt", None),
        ("shortDescription", 2, "string", "opt", None),
        ("type", 3, "FeatureType", "opt", None),
    ],
    # --- FeatureTypes.proto -------------------------------------------------------------------
    "FeatureType": [
        ("multiArrayType", 5, "ArrayFeatureType", "opt", "Type"),
        ("isOptional", 1000, "bool", "opt", None),
    ],
    "SizeRange": [
        ("lowerBound", 1, "uint64", "opt", None),
        ("upperBound", 2, "int64", "opt", None),
    ],
    "ArrayFeatureType": [
        ("shape", 1, "int64", "rep", None),
        ("dataType", 2, ".ArrayFeatureType.ArrayDataType", "opt", None),
        ("enumeratedShapes", 21, "ArrayFeatureType.EnumeratedShapes", "opt",
         "ShapeFlexibility"),
        ("shapeRange", 31, "ArrayFeatureType.ShapeRange", "opt", "ShapeFlexibility"),
    ],
    "ArrayFeatureType.Shape": [("shape", 1, "int64", "rep", None)],
    "ArrayFeatureType.EnumeratedShapes": [("shapes", 1, "ArrayFeatureType.Shape", "rep", None)],
    "ArrayFeatureType.ShapeRange": [("sizeRanges", 1, "SizeRange", "rep", None)],
    # --- NeuralNetwork.proto ------------------------------------------------------------------
    "NeuralNetwork": [
        ("layers", 1, "NeuralNetworkLayer", "rep", None),
        ("arrayInputShapeMapping", 5, ".NeuralNetworkMultiArrayShapeMapping", "opt", None),
        ("imageInputShapeMapping", 6, ".NeuralNetworkImageShapeMapping", "opt", None),
    ],
    "Tensor": [
        ("rank", 1, "uint32", "opt", None),
        ("dimValue", 2, "int64", "rep", None),
    ],
    "NeuralNetworkLayer": [
        ("name", 1, "string", "opt", None),
        ("input", 2, "string", "rep", None),
        ("output", 3, "string", "rep", None),
        ("inputTensor", 4, "Tensor", "rep", None),
        ("outputTensor", 5, "Tensor", "rep", None),
        ("isUpdatable", 10, "bool", "opt", None),
        ("convolution", 100, "ConvolutionLayerParams", "opt", _L),
        ("pooling", 120, "PoolingLayerParams", "opt", _L),
        ("activation", 130, "ActivationParams", "opt", _L),
        ("add", 230, "AddLayerParams", "opt", _L),
        ("reshape", 300, "ReshapeLayerParams", "opt", _L),
        ("flatten", 301, "FlattenLayerParams", "opt", _L),
        ("concat", 320, "ConcatLayerParams", "opt", _L),
        ("squeeze", 1120, "SqueezeLayerParams", "opt", _L),
        ("flattenTo2D", 1130, "FlattenTo2DLayerParams", "opt", _L),
        ("reshapeStatic", 1140, "ReshapeStaticLayerParams", "opt", _L),
        ("reduceMean", 1280, "ReduceMeanLayerParams", "opt", _L),
    ],
    "WeightParams": [
        ("floatValue", 1, "float", "rep", None),
        ("float16Value", 2, "bytes", "opt", None),
        ("rawValue", 30, "bytes", "opt", None),
        ("int8RawValue", 31, "bytes", "opt", None),
        ("isUpdatable", 50, "bool", "opt", None),
    ],
    "BorderAmounts": [("borderAmounts", 10, "BorderAmounts.EdgeSizes", "rep", None)],
    "BorderAmounts.EdgeSizes": [
        ("startEdgeSize", 1, "uint64", "opt", None),
        ("endEdgeSize", 2, "uint64", "opt", None),
    ],
    "ValidPadding": [("paddingAmounts", 1, "BorderAmounts", "opt", None)],
    "SamePadding": [("asymmetryMode", 1, ".SamePadding.SamePaddingMode", "opt", None)],
    "ConvolutionLayerParams": [
        ("outputChannels", 1, "uint64", "opt", None),
        ("kernelChannels", 2, "uint64", "opt", None),
        ("nGroups", 10, "uint64", "opt", None),
        ("kernelSize", 20, "uint64", "rep", None),
        ("stride", 30, "uint64", "rep", None),
        ("dilationFactor", 40, "uint64", "rep", None),
        ("valid", 50, "ValidPadding", "opt", "ConvolutionPaddingType"),
        ("same", 51, "SamePadding", "opt", "ConvolutionPaddingType"),
        ("isDeconvolution", 60, "bool", "opt", None),
        ("hasBias", 70, "bool", "opt", None),
        ("weights", 90, "WeightParams", "opt", None),
        ("bias", 91, "WeightParams", "opt", None),
        ("outputShape", 100, "uint64", "rep", None),
    ],
    "PoolingLayerParams": [
        ("type", 1, ".PoolingLayerParams.PoolingType", "opt", None),
        ("kernelSize", 10, "uint64", "rep", None),
        ("stride", 20, "uint64", "rep", None),
        ("valid", 30, "ValidPadding", "opt", "PoolingPaddingType"),
        ("same", 31, "SamePadding", "opt", "PoolingPaddingType"),
        ("includeLastPixel", 32, "PoolingLayerParams.ValidCompletePadding", "opt",
         "PoolingPaddingType"),
        ("avgPoolExcludePadding", 50, "bool", "opt", None),
        ("globalPooling", 60, "bool", "opt", None),
    ],
    "PoolingLayerParams.ValidCompletePadding": [("paddingAmounts", 10, "uint64", "rep", None)],
    "ActivationReLU": [],
    "ActivationParams": [("ReLU", 10, "ActivationReLU", "opt", "NonlinearityType")],
    "ConcatLayerParams": [("sequenceConcat", 100, "bool", "opt", None)],
    "AddLayerParams": [("alpha", 1, "float", "opt", None)],
    "FlattenLayerParams": [("mode", 1, ".FlattenLayerParams.FlattenOrder", "opt", None)],
    "ReshapeLayerParams": [
        ("targetShape", 1, "int64", "rep", None),
        ("mode", 2, ".ReshapeLayerParams.ReshapeOrder", "opt", None),
    ],
    "SqueezeLayerParams": [
        ("axes", 1, "int64", "rep", None),
        ("squeezeAll", 2, "bool", "opt", None),
    ],
    "FlattenTo2DLayerParams": [("axis", 1, "int64", "opt", None)],
    "ReshapeStaticLayerParams": [("targetShape", 1, "int64", "rep", None)],
    "ReduceMeanLayerParams": [
        ("axes", 1, "int64", "rep", None),
        ("keepDims", 2, "bool", "opt", None),
        ("reduceAll", 3, "bool", "opt", None),
    ],
    # --- MIL.proto (CoreML.Specification.MILSpec) ---------------------------------------------
    "Program": [
        ("version", 1, "int64", "opt", None),
        ("functions", 2, "map<string,Function>", "rep", None),
        ("docString", 3, "string", "opt", None),
        ("attributes", 4, "map<string,Value>", "rep", None),
    ],
    "Function": [
        ("inputs", 1, "NamedValueType", "rep", None),
        ("opset", 2, "string", "opt", None),
        ("block_specializations", 3, "map<string,Block>", "rep", None),
        ("attributes", 4, "map<string,Value>", "rep", None),
    ],
    "Block": [
        ("inputs", 1, "NamedValueType", "rep", None),
        ("outputs", 2, "string", "rep", None),
        ("operations", 3, "Operation", "rep", None),
        ("attributes", 4, "map<string,Value>", "rep", None),
    ],
    "Argument": [("arguments", 1, "Argument.Binding", "rep", None)],
    "Argument.Binding": [
        ("name", 1, "string", "opt", "binding"),
        ("value", 2, "Value", "opt", "binding"),
    ],
    "Operation": [
        ("type", 1, "string", "opt", None),
        ("inputs", 2, "map<string,Argument>", "rep", None),
        ("outputs", 3, "NamedValueType", "rep", None),
        ("blocks", 4, "Block", "rep", None),
        ("attributes", 5, "map<string,Value>", "rep", None),
    ],
    "NamedValueType": [
        ("name", 1, "string", "opt", None),
        ("type", 2, "ValueType", "opt", None),
    ],
    "ValueType": [
        ("tensorType", 1, "TensorType", "opt", "type"),
        ("listType", 2, "ListType", "opt", "type"),
        ("tupleType", 3, "TupleType", "opt", "type"),
        ("dictionaryType", 4, "DictionaryType", "opt", "type"),
        ("stateType", 5, "StateType", "opt", "type"),
    ],
    "TensorType": [
        ("dataType", 1, ".DataType", "opt", None),
        ("rank", 2, "int64", "opt", None),
        ("dimensions", 3, "Dimension", "rep", None),
        ("attributes", 4, "map<string,Value>", "rep", None),
    ],
    "ListType": [
        ("type", 1, "ValueType", "opt", None),
        ("length", 2, "Dimension", "opt", None),
    ],
    "TupleType": [("types", 1, "ValueType", "rep", None)],
    "DictionaryType": [
        ("keyType", 1, "ValueType", "opt", None),
        ("valueType", 2, "ValueType", "opt", None),
    ],
    "StateType": [("wrappedType", 1, "ValueType", "opt", None)],
    "Dimension": [
        ("constant", 1, "Dimension.ConstantDimension", "opt", "dimension"),
        ("unknown", 2, "Dimension.UnknownDimension", "opt", "dimension"),
    ],
    "Dimension.ConstantDimension": [("size", 1, "uint64", "opt", None)],
    "Dimension.UnknownDimension": [("variadic", 1, "bool", "opt", None)],
    "Value": [
        ("docString", 1, "string", "opt", None),
        ("type", 2, "ValueType", "opt", None),
        ("immediateValue", 3, "Value.ImmediateValue", "opt", "value"),
        ("blobFileValue", 5, "Value.BlobFileValue", "opt", "value"),
    ],
    "Value.ImmediateValue": [
        ("tensor", 1, "TensorValue", "opt", "value"),
        ("tuple", 2, "TupleValue", "opt", "value"),
        ("list", 3, "ListValue", "opt", "value"),
        ("dictionary", 4, "DictionaryValue", "opt", "value"),
    ],
    "Value.BlobFileValue": [
        ("fileName", 1, "string", "opt", None),
        ("offset", 2, "uint64", "opt", None),
    ],
    "TensorValue": [
        ("floats", 1, "TensorValue.RepeatedFloats", "opt", "value"),
        ("ints", 2, "TensorValue.RepeatedInts", "opt", "value"),
        ("bools", 3, "TensorValue.RepeatedBools", "opt", "value"),
        ("strings", 4, "TensorValue.RepeatedStrings", "opt", "value"),
        ("longInts", 5, "TensorValue.RepeatedLongInts", "opt", "value"),
        ("doubles", 6, "TensorValue.RepeatedDoubles", "opt", "value"),
        ("bytes", 7, "TensorValue.RepeatedBytes", "opt", "value"),
    ],
    "TensorValue.RepeatedFloats": [("values", 1, "float", "rep", None)],
    "TensorValue.RepeatedDoubles": [("values", 1, "double", "rep", None)],
    "TensorValue.RepeatedInts": [("values", 1, "int32", "rep", None)],
    "TensorValue.RepeatedLongInts": [("values", 1, "int64", "rep", None)],
    "TensorValue.RepeatedBools": [("values", 1, "bool", "rep", None)],
    "TensorValue.RepeatedStrings": [("values", 1, "string", "rep", None)],
    "TensorValue.RepeatedBytes": [("values", 1, "bytes", "opt", None)],
    "TupleValue": [("values", 1, "Value", "rep", None)],
    "ListValue": [("values", 1, "Value", "rep", None)],
    "DictionaryValue": [("values", 1, "DictionaryValue.KeyValuePair", "rep", None)],
    "DictionaryValue.KeyValuePair": [
        ("key", 1, "Value", "opt", None),
        ("value", 2, "Value", "opt", None),
    ],
}
DECLARED = _MESSAGES

# Enums: top-level or nested ("Message.Enum") -> {value name: number}.
_ENUMS: dict[str, dict[str, int]] = {
    "ArrayFeatureType.ArrayDataType": {"INVALID_ARRAY_DATA_TYPE": 0, "FLOAT32": 65568,
                                       "DOUBLE": 65600, "INT32": 131104, "INT8": 131080,
                                       "FLOAT16": 65552},
    "NeuralNetworkMultiArrayShapeMapping": {"RANK5_ARRAY_MAPPING": 0, "EXACT_ARRAY_MAPPING": 1},
    "NeuralNetworkImageShapeMapping": {"RANK5_IMAGE_MAPPING": 0, "RANK4_IMAGE_MAPPING": 1},
    "SamePadding.SamePaddingMode": {"BOTTOM_RIGHT_HEAVY": 0, "TOP_LEFT_HEAVY": 1},
    "PoolingLayerParams.PoolingType": {"MAX": 0, "AVERAGE": 1, "L2": 2},
    "FlattenLayerParams.FlattenOrder": {"CHANNEL_FIRST": 0, "CHANNEL_LAST": 1},
    "ReshapeLayerParams.ReshapeOrder": {"CHANNEL_FIRST": 0, "CHANNEL_LAST": 1},
    "DataType": {"UNUSED_TYPE": 0, "BOOL": 1, "STRING": 2, "FLOAT8E4M3FN": 40,
                 "FLOAT8E5M2": 41, "FLOAT16": 10, "FLOAT32": 11, "FLOAT64": 12, "BFLOAT16": 13,
                 "INT8": 21, "INT16": 22, "INT32": 23, "INT64": 24, "INT4": 25, "UINT8": 31,
                 "UINT16": 32, "UINT32": 33, "UINT64": 34, "UINT4": 35, "UINT2": 36,
                 "UINT1": 37, "UINT6": 38, "UINT3": 39},
}
ENUMS = _ENUMS


def _entry_name(field_name: str) -> str:
    """protoc's name of a map field's entry message (``block_specializations`` ->
    ``BlockSpecializationsEntry``)."""
    return "".join(part[:1].upper() + part[1:] for part in field_name.split("_")) + "Entry"


def _file_proto() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(name="squeezenet_ports_coreml.proto",
                                             package=PACKAGE, syntax="proto3")
    messages: dict[str, descriptor_pb2.DescriptorProto] = {}
    for msg_name, fields in _MESSAGES.items():
        owner, _, name = msg_name.rpartition(".")
        msg = (messages[owner].nested_type if owner else fdp.message_type).add(name=name)
        messages[msg_name] = msg
        oneofs: dict[str, int] = {}
        for fname, number, ftype, label, oneof in fields:
            field = msg.field.add(name=fname, number=number, json_name=fname)
            field.label = _F.LABEL_REPEATED if label == "rep" else _F.LABEL_OPTIONAL
            if ftype.startswith("map<"):
                key, value = ftype[4:-1].split(",")
                entry = msg.nested_type.add(name=_entry_name(fname))
                entry.options.map_entry = True
                for n, (sub, t) in enumerate((("key", key), ("value", value)), 1):
                    f = entry.field.add(name=sub, number=n, label=_F.LABEL_OPTIONAL,
                                        json_name=sub)
                    set_type(f, t, PACKAGE)
                field.type = _F.TYPE_MESSAGE
                field.type_name = f".{PACKAGE}.{msg_name}.{entry.name}"
            else:
                set_type(field, ftype, PACKAGE)
            if oneof is not None:
                if oneof not in oneofs:
                    oneofs[oneof] = len(msg.oneof_decl)
                    msg.oneof_decl.add(name=oneof)
                field.oneof_index = oneofs[oneof]
    add_enums(fdp, messages, _ENUMS)
    return fdp


CLASSES = message_classes(_file_proto(), _MESSAGES)
Model = CLASSES["Model"]
ModelDescription = CLASSES["ModelDescription"]
Metadata = CLASSES["Metadata"]
FeatureDescription = CLASSES["FeatureDescription"]
FeatureType = CLASSES["FeatureType"]
ArrayFeatureType = CLASSES["ArrayFeatureType"]
NeuralNetwork = CLASSES["NeuralNetwork"]
NeuralNetworkLayer = CLASSES["NeuralNetworkLayer"]
WeightParams = CLASSES["WeightParams"]
Program = CLASSES["Program"]
Function = CLASSES["Function"]
Block = CLASSES["Block"]
Operation = CLASSES["Operation"]
Argument = CLASSES["Argument"]
NamedValueType = CLASSES["NamedValueType"]
ValueType = CLASSES["ValueType"]
TensorType = CLASSES["TensorType"]
Dimension = CLASSES["Dimension"]
Value = CLASSES["Value"]
TensorValue = CLASSES["TensorValue"]

# Enum numbers used by the codec.
FLOAT32_ARRAY = _ENUMS["ArrayFeatureType.ArrayDataType"]["FLOAT32"]
DATA_TYPES = _ENUMS["DataType"]
DATA_TYPE_NAMES = {v: k for k, v in DATA_TYPES.items()}
EXACT_ARRAY_MAPPING = _ENUMS["NeuralNetworkMultiArrayShapeMapping"]["EXACT_ARRAY_MAPPING"]

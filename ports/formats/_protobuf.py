"""What the schemas declared as data share (:mod:`ports.formats.caffe_schema`,
:mod:`ports.formats.coreml_schema`): a field's type from its declared name, enums added to
their owners, and the message classes of a file built in a private descriptor pool (so a
schema never collides with a user's compiled ``*_pb2`` of the same messages).  Works with
protobuf 3.20.x (``MessageFactory().GetPrototype``) and 4.x and later
(``message_factory.GetMessageClass``)."""

from __future__ import annotations

from typing import Iterable, Mapping

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto
SCALARS = {
    "string": F.TYPE_STRING, "bytes": F.TYPE_BYTES, "bool": F.TYPE_BOOL,
    "float": F.TYPE_FLOAT, "double": F.TYPE_DOUBLE, "int32": F.TYPE_INT32,
    "int64": F.TYPE_INT64, "uint32": F.TYPE_UINT32, "uint64": F.TYPE_UINT64,
}


def set_type(field, declared: str, package: str) -> None:
    """``field``'s type from its declared name: a scalar of :data:`SCALARS`, ``.Enum`` (an
    enum of ``package``, nested ones ``.Outer.Enum``) or a message name."""
    if declared in SCALARS:
        field.type = SCALARS[declared]
    elif declared.startswith("."):
        field.type = F.TYPE_ENUM
        field.type_name = f".{package}{declared}"
    else:
        field.type = F.TYPE_MESSAGE
        field.type_name = f".{package}.{declared}"


def add_enums(fdp: descriptor_pb2.FileDescriptorProto,
              messages: Mapping[str, descriptor_pb2.DescriptorProto],
              enums: Mapping[str, Mapping[str, int]]) -> None:
    """Each enum of ``enums`` (top-level, or ``"Message.Enum"`` nested in ``messages``'s
    message) with its values, in number order."""
    for enum_name, values in enums.items():
        owner, _, name = enum_name.rpartition(".")
        enum = (messages[owner] if owner else fdp).enum_type.add(name=name)
        for value_name, number in sorted(values.items(), key=lambda kv: kv[1]):
            enum.value.add(name=value_name, number=number)


def message_classes(fdp: descriptor_pb2.FileDescriptorProto,
                    names: Iterable[str]) -> dict[str, type]:
    """The message classes named ``names`` (``"Outer.Inner"`` for nested ones) of ``fdp``,
    built in a pool of their own."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(fdp.SerializeToString())
    get_class = getattr(message_factory, "GetMessageClass", None)
    factory = None if get_class is not None else message_factory.MessageFactory(pool)
    classes = {}
    for name in names:
        descriptor = pool.FindMessageTypeByName(f"{fdp.package}.{name}")
        classes[name] = get_class(descriptor) if get_class else factory.GetPrototype(descriptor)
    return classes

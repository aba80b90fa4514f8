// GGUF metadata values: type names and decoding from the file bytes.
#include <string>
#include <vector>

#include "gguf/gguf_file.h"
#include "gguf/value_decoder.h"

namespace decollama {

const char* gguf_value_type_name(GGUFValueType t) {
    switch (t) {
        case GGUFValueType::UINT8: return "uint8";
        case GGUFValueType::INT8: return "int8";
        case GGUFValueType::UINT16: return "uint16";
        case GGUFValueType::INT16: return "int16";
        case GGUFValueType::UINT32: return "uint32";
        case GGUFValueType::INT32: return "int32";
        case GGUFValueType::FLOAT32: return "float32";
        case GGUFValueType::BOOL: return "bool";
        case GGUFValueType::STRING: return "string";
        case GGUFValueType::ARRAY: return "array";
        case GGUFValueType::UINT64: return "uint64";
        case GGUFValueType::INT64: return "int64";
        case GGUFValueType::FLOAT64: return "float64";
    }
    return "unknown";
}

uint64_t GGUFValue::array_size() const {
    if (!is_array()) return 0;
    return arr_u.size() + arr_i.size() + arr_f.size() + arr_s.size() + arr_nested.size();
}

uint64_t min_encoded_size(GGUFValueType t) {
    switch (t) {
        case GGUFValueType::UINT8:
        case GGUFValueType::INT8:
        case GGUFValueType::BOOL: return 1;
        case GGUFValueType::UINT16:
        case GGUFValueType::INT16: return 2;
        case GGUFValueType::UINT32:
        case GGUFValueType::INT32:
        case GGUFValueType::FLOAT32: return 4;
        case GGUFValueType::UINT64:
        case GGUFValueType::INT64:
        case GGUFValueType::FLOAT64:
        case GGUFValueType::STRING: return 8;  // the length of an empty string
        case GGUFValueType::ARRAY: return 12;  // element type + length of an empty array
    }
    return 1;
}

GGUFValueType read_value_type(ByteCursor& cur, const FieldName& field) {
    const uint32_t id = cur.read<uint32_t>(field);
    if (id > static_cast<uint32_t>(GGUFValueType::FLOAT64))
        throw GGUFError(cur.path(), field(), "unknown value type id " + std::to_string(id));
    return static_cast<GGUFValueType>(id);
}

namespace {

// A stored bool must be 0 or 1: anything else means the bytes are not what they claim to be.
uint64_t checked_bool(uint8_t b, const ByteCursor& cur, const FieldName& field) {
    if (b > 1) throw GGUFError(cur.path(), field(), "bool value " + std::to_string(b) + " is not 0 or 1");
    return b;
}

// n elements of a fixed-size numeric type; the caller has checked that n * sizeof(T) bytes remain,
// so reserving n costs memory in proportion to bytes that are really in the file.
template <class T, class Out>
void read_numbers(ByteCursor& cur, uint64_t n, std::vector<Out>& out) {
    out.reserve(static_cast<size_t>(n));
    for (uint64_t k = 0; k < n; ++k) out.push_back(static_cast<Out>(cur.read_unchecked<T>()));
}

GGUFValue read_array(ByteCursor& cur, const FieldName& field, int depth) {
    if (depth >= kMaxArrayNesting)
        throw GGUFError(cur.path(), field(),
                        "arrays nested more than " + std::to_string(kMaxArrayNesting) + " levels deep");
    GGUFValue v;
    v.type = GGUFValueType::ARRAY;
    v.elem_type = read_value_type(cur, [&] { return field() + " array type"; });
    const FieldName length_field = [&] { return field() + " array length"; };
    const uint64_t n = cur.read<uint64_t>(length_field);
    const uint64_t min_size = min_encoded_size(v.elem_type);
    if (n > cur.remaining() / min_size)
        throw GGUFError(cur.path(), length_field(),
                        "array of " + std::to_string(n) + " " + gguf_value_type_name(v.elem_type) +
                            " does not fit in the " + std::to_string(cur.remaining()) +
                            " bytes left (at least " + std::to_string(min_size) + " bytes per element)");

    switch (v.elem_type) {
        case GGUFValueType::UINT8: read_numbers<uint8_t>(cur, n, v.arr_u); break;
        case GGUFValueType::UINT16: read_numbers<uint16_t>(cur, n, v.arr_u); break;
        case GGUFValueType::UINT32: read_numbers<uint32_t>(cur, n, v.arr_u); break;
        case GGUFValueType::UINT64: read_numbers<uint64_t>(cur, n, v.arr_u); break;
        case GGUFValueType::INT8: read_numbers<int8_t>(cur, n, v.arr_i); break;
        case GGUFValueType::INT16: read_numbers<int16_t>(cur, n, v.arr_i); break;
        case GGUFValueType::INT32: read_numbers<int32_t>(cur, n, v.arr_i); break;
        case GGUFValueType::INT64: read_numbers<int64_t>(cur, n, v.arr_i); break;
        case GGUFValueType::FLOAT32: read_numbers<float>(cur, n, v.arr_f); break;
        case GGUFValueType::FLOAT64: read_numbers<double>(cur, n, v.arr_f); break;
        case GGUFValueType::BOOL:
            v.arr_u.reserve(static_cast<size_t>(n));
            for (uint64_t k = 0; k < n; ++k) {
                const uint8_t b = cur.read_unchecked<uint8_t>();
                v.arr_u.push_back(checked_bool(b, cur, [&] { return field() + " element " + std::to_string(k); }));
            }
            break;
        case GGUFValueType::STRING:
            v.arr_s.reserve(upfront_reserve(n));
            for (uint64_t k = 0; k < n; ++k)
                v.arr_s.push_back(cur.read_string(
                    [&] { return field() + " element " + std::to_string(k) + " string length"; }));
            break;
        case GGUFValueType::ARRAY:
            v.arr_nested.reserve(upfront_reserve(n));
            for (uint64_t k = 0; k < n; ++k)
                v.arr_nested.push_back(
                    read_array(cur, [&field, k] { return field() + " element " + std::to_string(k); }, depth + 1));
            break;
    }
    return v;
}

}  // namespace

GGUFValue read_value(ByteCursor& cur, GGUFValueType type, const FieldName& field, int depth) {
    if (type == GGUFValueType::ARRAY) return read_array(cur, field, depth);

    GGUFValue v;
    v.type = type;
    const FieldName value_field = [&] { return field() + " value"; };
    switch (type) {
        case GGUFValueType::UINT8: v.u = cur.read<uint8_t>(value_field); break;
        case GGUFValueType::UINT16: v.u = cur.read<uint16_t>(value_field); break;
        case GGUFValueType::UINT32: v.u = cur.read<uint32_t>(value_field); break;
        case GGUFValueType::UINT64: v.u = cur.read<uint64_t>(value_field); break;
        case GGUFValueType::INT8: v.i = cur.read<int8_t>(value_field); break;
        case GGUFValueType::INT16: v.i = cur.read<int16_t>(value_field); break;
        case GGUFValueType::INT32: v.i = cur.read<int32_t>(value_field); break;
        case GGUFValueType::INT64: v.i = cur.read<int64_t>(value_field); break;
        case GGUFValueType::FLOAT32: v.f = cur.read<float>(value_field); break;
        case GGUFValueType::FLOAT64: v.f = cur.read<double>(value_field); break;
        case GGUFValueType::BOOL: v.u = checked_bool(cur.read<uint8_t>(value_field), cur, value_field); break;
        case GGUFValueType::STRING: v.s = cur.read_string([&] { return field() + " string length"; }); break;
        case GGUFValueType::ARRAY: break;  // handled above
    }
    return v;
}

}  // namespace decollama

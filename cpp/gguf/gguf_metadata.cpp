// Typed access to GGUF metadata: integer getters accept any integer type whose value fits,
// float getters any number; everything else is a GGUFError naming the key.
#include <limits>
#include <string>
#include <vector>

#include "gguf/error_text.h"
#include "gguf/gguf_file.h"

namespace decollama {

namespace {

bool is_unsigned(GGUFValueType t) {
    return t == GGUFValueType::UINT8 || t == GGUFValueType::UINT16 || t == GGUFValueType::UINT32 ||
           t == GGUFValueType::UINT64;
}
bool is_signed(GGUFValueType t) {
    return t == GGUFValueType::INT8 || t == GGUFValueType::INT16 || t == GGUFValueType::INT32 ||
           t == GGUFValueType::INT64;
}
bool is_float(GGUFValueType t) { return t == GGUFValueType::FLOAT32 || t == GGUFValueType::FLOAT64; }

constexpr uint64_t kInt64Max = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());

std::string type_text(const GGUFValue& v) {
    if (v.is_array()) return std::string("array of ") + gguf_value_type_name(v.elem_type);
    return gguf_value_type_name(v.type);
}

// Resolves a key for a typed getter; throws when absent unless a default is allowed.
class MetadataLookup {
public:
    MetadataLookup(const GGUFFile& file, const std::string& key)
        : file_(file), key_(key), value_(file.find(key)) {}

    const GGUFValue* value() const { return value_; }
    const GGUFValue& required() const {
        if (value_ == nullptr) fail("missing");
        return *value_;
    }
    [[noreturn]] void fail(const std::string& reason) const {
        throw GGUFError(file_.path(), "metadata key " + quote_name(key_), reason);
    }
    [[noreturn]] void wrong_type(const char* expected) const {
        fail(std::string("expected ") + expected + ", found " + type_text(*value_));
    }

private:
    const GGUFFile& file_;
    const std::string& key_;
    const GGUFValue* value_;
};

uint64_t as_uint(const MetadataLookup& l) {
    const GGUFValue& v = l.required();
    if (is_unsigned(v.type)) return v.u;
    if (is_signed(v.type)) {
        if (v.i < 0) l.fail("value " + std::to_string(v.i) + " is negative");
        return static_cast<uint64_t>(v.i);
    }
    l.wrong_type("an unsigned integer");
}

int64_t as_int(const MetadataLookup& l) {
    const GGUFValue& v = l.required();
    if (is_signed(v.type)) return v.i;
    if (is_unsigned(v.type)) {
        if (v.u > kInt64Max) l.fail("value " + std::to_string(v.u) + " does not fit in an int64");
        return static_cast<int64_t>(v.u);
    }
    l.wrong_type("an integer");
}

double as_float(const MetadataLookup& l) {
    const GGUFValue& v = l.required();
    if (is_float(v.type)) return v.f;
    if (is_unsigned(v.type)) return static_cast<double>(v.u);
    if (is_signed(v.type)) return static_cast<double>(v.i);
    l.wrong_type("a number");
}

bool as_bool(const MetadataLookup& l) {
    const GGUFValue& v = l.required();
    if (v.type != GGUFValueType::BOOL) l.wrong_type("a bool");
    return v.u != 0;
}

const std::string& as_string(const MetadataLookup& l) {
    const GGUFValue& v = l.required();
    if (v.type != GGUFValueType::STRING) l.wrong_type("a string");
    return v.s;
}

}  // namespace

std::string GGUFFile::get_string(const std::string& key) const { return as_string(MetadataLookup(*this, key)); }
uint64_t GGUFFile::get_uint(const std::string& key) const { return as_uint(MetadataLookup(*this, key)); }
int64_t GGUFFile::get_int(const std::string& key) const { return as_int(MetadataLookup(*this, key)); }
double GGUFFile::get_float(const std::string& key) const { return as_float(MetadataLookup(*this, key)); }
bool GGUFFile::get_bool(const std::string& key) const { return as_bool(MetadataLookup(*this, key)); }

std::string GGUFFile::get_string(const std::string& key, const std::string& dflt) const {
    const MetadataLookup l(*this, key);
    return l.value() ? as_string(l) : dflt;
}
uint64_t GGUFFile::get_uint(const std::string& key, uint64_t dflt) const {
    const MetadataLookup l(*this, key);
    return l.value() ? as_uint(l) : dflt;
}
int64_t GGUFFile::get_int(const std::string& key, int64_t dflt) const {
    const MetadataLookup l(*this, key);
    return l.value() ? as_int(l) : dflt;
}
double GGUFFile::get_float(const std::string& key, double dflt) const {
    const MetadataLookup l(*this, key);
    return l.value() ? as_float(l) : dflt;
}
bool GGUFFile::get_bool(const std::string& key, bool dflt) const {
    const MetadataLookup l(*this, key);
    return l.value() ? as_bool(l) : dflt;
}

std::vector<std::string> GGUFFile::get_string_array(const std::string& key) const {
    const MetadataLookup l(*this, key);
    const GGUFValue& v = l.required();
    if (!v.is_array() || v.elem_type != GGUFValueType::STRING) l.wrong_type("an array of strings");
    return v.arr_s;
}

std::vector<float> GGUFFile::get_float_array(const std::string& key) const {
    const MetadataLookup l(*this, key);
    const GGUFValue& v = l.required();
    if (!v.is_array()) l.wrong_type("an array of numbers");
    std::vector<float> out;
    out.reserve(v.array_size());
    if (is_float(v.elem_type))
        for (double x : v.arr_f) out.push_back(static_cast<float>(x));
    else if (is_unsigned(v.elem_type))
        for (uint64_t x : v.arr_u) out.push_back(static_cast<float>(x));
    else if (is_signed(v.elem_type))
        for (int64_t x : v.arr_i) out.push_back(static_cast<float>(x));
    else
        l.wrong_type("an array of numbers");
    return out;
}

std::vector<int64_t> GGUFFile::get_int_array(const std::string& key) const {
    const MetadataLookup l(*this, key);
    const GGUFValue& v = l.required();
    if (!v.is_array()) l.wrong_type("an array of integers");
    if (is_signed(v.elem_type)) return v.arr_i;
    if (!is_unsigned(v.elem_type)) l.wrong_type("an array of integers");
    std::vector<int64_t> out;
    out.reserve(v.arr_u.size());
    for (uint64_t x : v.arr_u) {
        if (x > kInt64Max) l.fail("element " + std::to_string(x) + " does not fit in an int64");
        out.push_back(static_cast<int64_t>(x));
    }
    return out;
}

}  // namespace decollama

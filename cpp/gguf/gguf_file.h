// GGUF v2/v3 reader: parses and validates the header, metadata and tensor infos, and maps the
// data section read-only (zero copy). Every violation throws GGUFError(path, field, reason).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/error.h"
#include "quant/ggml_type.h"

namespace decollama {

enum class GGUFValueType : uint32_t {
    UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
    STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* gguf_value_type_name(GGUFValueType t);

// One metadata value. Scalars keep their exact value in the member matching their kind;
// arrays keep their elements in the vector matching the element kind.
struct GGUFValue {
    GGUFValueType type = GGUFValueType::UINT8;
    GGUFValueType elem_type = GGUFValueType::UINT8;  // arrays only

    uint64_t u = 0;      // UINT8..UINT64, BOOL (0/1)
    int64_t i = 0;       // INT8..INT64
    double f = 0.0;      // FLOAT32, FLOAT64
    std::string s;       // STRING

    std::vector<uint64_t> arr_u;          // arrays of unsigned ints and bools
    std::vector<int64_t> arr_i;           // arrays of signed ints
    std::vector<double> arr_f;            // arrays of floats
    std::vector<std::string> arr_s;       // arrays of strings
    std::vector<GGUFValue> arr_nested;    // arrays of arrays

    bool is_array() const { return type == GGUFValueType::ARRAY; }
    uint64_t array_size() const;
};

struct GGUFTensorInfo {
    std::string name;
    std::vector<int64_t> shape;  // GGML order: shape[0] is the contiguous (row) dimension
    GGMLType type = GGMLType::F32;
    uint64_t offset = 0;         // relative to the data section
    uint64_t nbytes = 0;
    const uint8_t* data = nullptr;  // into the mapping
    int64_t n_elements() const;
};

class MappedFile;  // RAII read-only mmap
class ByteCursor;  // bounds-checked reads (reader internals)

class GGUFFile {
public:
    // Maps the file read-only and parses it.
    explicit GGUFFile(const std::string& path);
    // Parses a GGUF image held in memory (fuzzing, tests). The bytes are borrowed: the caller
    // keeps them alive and unchanged for the lifetime of this object. `name` stands in for
    // the path in error messages.
    GGUFFile(const uint8_t* bytes, size_t size, const std::string& name);
    ~GGUFFile();
    GGUFFile(const GGUFFile&) = delete;
    GGUFFile& operator=(const GGUFFile&) = delete;

    const std::string& path() const { return path_; }
    uint32_t version() const { return version_; }
    uint64_t alignment() const { return alignment_; }
    uint64_t data_offset() const { return data_offset_; }
    uint64_t file_size() const { return size_; }

    // Metadata in file order.
    const std::vector<std::pair<std::string, GGUFValue>>& metadata() const { return metadata_; }
    const GGUFValue* find(const std::string& key) const;  // nullptr when absent
    bool has(const std::string& key) const { return find(key) != nullptr; }

    // Typed getters: throw GGUFError(path, key, reason) when absent or of an incompatible type.
    // Integer getters accept any integer type whose value fits; float getters accept any number.
    std::string get_string(const std::string& key) const;
    uint64_t get_uint(const std::string& key) const;
    int64_t get_int(const std::string& key) const;
    double get_float(const std::string& key) const;
    bool get_bool(const std::string& key) const;
    std::vector<std::string> get_string_array(const std::string& key) const;
    std::vector<float> get_float_array(const std::string& key) const;
    std::vector<int64_t> get_int_array(const std::string& key) const;
    // With a default when absent (still throws on a wrong type).
    std::string get_string(const std::string& key, const std::string& dflt) const;
    uint64_t get_uint(const std::string& key, uint64_t dflt) const;
    int64_t get_int(const std::string& key, int64_t dflt) const;
    double get_float(const std::string& key, double dflt) const;
    bool get_bool(const std::string& key, bool dflt) const;

    // "general.architecture", or "" when absent.
    std::string architecture() const;

    const std::vector<GGUFTensorInfo>& tensors() const { return tensors_; }
    const GGUFTensorInfo* find_tensor(const std::string& name) const;  // nullptr when absent
    const GGUFTensorInfo& tensor(const std::string& name) const;       // throws GGUFError

private:
    void parse();
    void read_metadata(ByteCursor& cur, uint64_t kv_count);
    void read_tensor_infos(ByteCursor& cur, uint64_t tensor_count);
    void apply_alignment();
    void place_tensor_data();

    std::string path_;
    std::unique_ptr<MappedFile> map_;  // null when parsing borrowed memory
    const uint8_t* bytes_ = nullptr;   // the whole file image: the mapping or the borrowed bytes
    uint64_t size_ = 0;
    uint32_t version_ = 0;
    uint64_t alignment_ = 32;
    uint64_t data_offset_ = 0;
    std::vector<std::pair<std::string, GGUFValue>> metadata_;
    std::unordered_map<std::string, size_t> metadata_index_;
    std::vector<GGUFTensorInfo> tensors_;
    std::unordered_map<std::string, size_t> tensor_index_;
};

}  // namespace decollama

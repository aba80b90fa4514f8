// GGUF layout: header, metadata key/values, tensor infos, padding, data section.
// Everything read from the file is validated against the file size before it is used or
// allocated, so a malformed or hostile file yields a GGUFError and nothing else.
#include "gguf/gguf_file.h"

#include <algorithm>
#include <limits>
#include <string>

#include "gguf/byte_cursor.h"
#include "gguf/error_text.h"
#include "gguf/mapped_file.h"
#include "gguf/value_decoder.h"
#include "quant/weight_types.h"

namespace decollama {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian uint32
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;
// Fewest bytes one entry can take, to bound counts before reserving: a key/value is an empty
// key (8) + type (4) + a one-byte value; a tensor info is an empty name (8) + n_dims (4) +
// one dim (8) + type (4) + offset (8).
constexpr uint64_t kMinKeyValueBytes = 8 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;

std::string shape_text(const std::vector<int64_t>& shape) {
    std::string s = "[";
    for (size_t d = 0; d < shape.size(); ++d) s += (d ? ", " : "") + std::to_string(shape[d]);
    return s + "]";
}

}  // namespace

int64_t GGUFTensorInfo::n_elements() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;  // validated not to overflow when the file was parsed
    return n;
}

GGUFFile::GGUFFile(const std::string& path) : path_(path), map_(std::make_unique<MappedFile>(path)) {
    bytes_ = map_->data();
    size_ = map_->size();
    parse();
}

GGUFFile::GGUFFile(const uint8_t* bytes, size_t size, const std::string& name)
    : path_(name), bytes_(bytes), size_(size) {
    parse();
}

GGUFFile::~GGUFFile() = default;

void GGUFFile::parse() {
    ByteCursor cur(bytes_, size_, path_);

    const uint32_t magic = cur.read<uint32_t>([] { return "header magic"; });
    if (magic != kMagic)
        throw GGUFError(path_, "header magic",
                        "not a GGUF file: starts with " +
                            quote_name(std::string(reinterpret_cast<const char*>(bytes_), 4)) +
                            " instead of 'GGUF'");

    version_ = cur.read<uint32_t>([] { return "header version"; });
    if (version_ == 1)
        throw GGUFError(path_, "header version", "GGUF version 1 is not supported (only versions 2 and 3)");
    if (version_ != 2 && version_ != 3) {
        // Versions are small numbers: low 16 bits all zero means the bytes are swapped.
        if (version_ != 0 && (version_ & 0xFFFFu) == 0)
            throw GGUFError(path_, "header version", "big-endian GGUF files are not supported");
        throw GGUFError(path_, "header version",
                        "unsupported GGUF version " + std::to_string(version_) + " (supported: 2 and 3)");
    }

    const uint64_t tensor_count = cur.read<uint64_t>([] { return "header tensor_count"; });
    const uint64_t kv_count = cur.read<uint64_t>([] { return "header kv_count"; });
    if (kv_count > cur.remaining() / kMinKeyValueBytes)
        throw GGUFError(path_, "header kv_count",
                        std::to_string(kv_count) + " key/values cannot fit in the " +
                            std::to_string(cur.remaining()) + " bytes left");
    const uint64_t left_for_tensors = cur.remaining() - kv_count * kMinKeyValueBytes;
    if (tensor_count > left_for_tensors / kMinTensorInfoBytes)
        throw GGUFError(path_, "header tensor_count",
                        std::to_string(tensor_count) + " tensor infos cannot fit in the " +
                            std::to_string(left_for_tensors) + " bytes left after the key/values");

    read_metadata(cur, kv_count);
    apply_alignment();
    read_tensor_infos(cur, tensor_count);

    // No overflow: the position is at most the file size and the alignment fits in 32 bits.
    data_offset_ = (cur.position() + alignment_ - 1) / alignment_ * alignment_;
    place_tensor_data();
}

void GGUFFile::read_metadata(ByteCursor& cur, uint64_t kv_count) {
    metadata_.reserve(upfront_reserve(kv_count));
    for (uint64_t k = 0; k < kv_count; ++k) {
        const std::string index = "metadata key #" + std::to_string(k);
        std::string key = cur.read_string([&] { return index + " name length"; });
        const std::string field = index + " " + quote_name(key);

        const GGUFValueType type = read_value_type(cur, [&] { return field + " type"; });
        GGUFValue value = read_value(cur, type, [&] { return field; });

        const auto [it, inserted] = metadata_index_.emplace(key, metadata_.size());
        if (!inserted)
            throw GGUFError(path_, field, "duplicate key (first at #" + std::to_string(it->second) + ")");
        metadata_.emplace_back(std::move(key), std::move(value));
    }
}

void GGUFFile::apply_alignment() {
    const GGUFValue* v = find("general.alignment");
    if (v == nullptr) {
        alignment_ = kDefaultAlignment;
        return;
    }
    const std::string field = "metadata key 'general.alignment'";
    if (v->type != GGUFValueType::UINT32)
        throw GGUFError(path_, field, std::string("must be a uint32, not ") + gguf_value_type_name(v->type));
    if (v->u == 0 || (v->u & (v->u - 1)) != 0)
        throw GGUFError(path_, field, "alignment " + std::to_string(v->u) + " is not a non-zero power of two");
    alignment_ = v->u;
}

void GGUFFile::read_tensor_infos(ByteCursor& cur, uint64_t tensor_count) {
    tensors_.reserve(upfront_reserve(tensor_count));
    for (uint64_t t = 0; t < tensor_count; ++t) {
        GGUFTensorInfo info;
        const std::string index = "tensor #" + std::to_string(t);
        info.name = cur.read_string([&] { return index + " name length"; });
        const std::string field = "tensor " + quote_name(info.name);

        const auto [it, inserted] = tensor_index_.emplace(info.name, tensors_.size());
        if (!inserted)
            throw GGUFError(path_, field + " name",
                            "duplicate tensor name (first at tensor #" + std::to_string(it->second) + ")");

        const uint32_t n_dims = cur.read<uint32_t>([&] { return field + " n_dims"; });
        if (n_dims < 1 || n_dims > kMaxDims)
            throw GGUFError(path_, field + " n_dims",
                            "n_dims " + std::to_string(n_dims) + " is outside 1.." + std::to_string(kMaxDims));

        int64_t n_elements = 1;
        for (uint32_t d = 0; d < n_dims; ++d) {
            const std::string dim_field = field + " ne[" + std::to_string(d) + "]";
            const uint64_t ne = cur.read<uint64_t>([&] { return dim_field; });
            if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
                throw GGUFError(path_, dim_field, "dimension " + std::to_string(ne) + " is negative as an int64");
            info.shape.push_back(static_cast<int64_t>(ne));
            if (__builtin_mul_overflow(n_elements, static_cast<int64_t>(ne), &n_elements))
                throw GGUFError(path_, field + " shape",
                                "element count of " + shape_text(info.shape) + "... overflows int64");
        }

        const uint32_t type_id = cur.read<uint32_t>([&] { return field + " type"; });
        const WeightTypeTraits* traits = find_weight_type(type_id);
        if (traits == nullptr)
            throw GGUFError(path_, field + " type", "unknown tensor type id " + std::to_string(type_id));
        info.type = traits->type;

        if (info.shape[0] % traits->block_size != 0)
            throw GGUFError(path_, field + " shape",
                            "ne[0] = " + std::to_string(info.shape[0]) + " is not a multiple of the " +
                                traits->name + " block size " + std::to_string(traits->block_size));
        const uint64_t n_blocks = static_cast<uint64_t>(n_elements / traits->block_size);
        if (__builtin_mul_overflow(n_blocks, static_cast<uint64_t>(traits->block_bytes), &info.nbytes))
            throw GGUFError(path_, field + " size",
                            "byte size of " + shape_text(info.shape) + " " + traits->name + " overflows");

        info.offset = cur.read<uint64_t>([&] { return field + " offset"; });
        if (info.offset % alignment_ != 0)
            throw GGUFError(path_, field + " offset",
                            "offset " + std::to_string(info.offset) + " is not a multiple of the alignment " +
                                std::to_string(alignment_));
        tensors_.push_back(std::move(info));
    }
}

void GGUFFile::place_tensor_data() {
    if (tensors_.empty()) return;  // a file without tensors needs no data section
    if (data_offset_ > size_)
        throw GGUFError(path_, "data section",
                        "starts at " + std::to_string(data_offset_) + ", past the end of the file (" +
                            std::to_string(size_) + " bytes)");
    const uint64_t data_size = size_ - data_offset_;
    for (GGUFTensorInfo& info : tensors_) {
        const std::string field = "tensor " + quote_name(info.name);
        if (info.offset > data_size)
            throw GGUFError(path_, field + " offset",
                            "offset " + std::to_string(info.offset) + " is past the end of the " +
                                std::to_string(data_size) + "-byte data section");
        if (info.nbytes > data_size - info.offset)
            throw GGUFError(path_, field + " data",
                            std::to_string(info.nbytes) + " bytes at offset " + std::to_string(info.offset) +
                                " run past the end of the " + std::to_string(data_size) + "-byte data section");
        info.data = bytes_ + data_offset_ + info.offset;
    }

    // Tensors must not share bytes: overlapping ranges mean corrupt offsets.
    std::vector<const GGUFTensorInfo*> by_offset;
    for (const GGUFTensorInfo& info : tensors_)
        if (info.nbytes > 0) by_offset.push_back(&info);
    std::sort(by_offset.begin(), by_offset.end(),
              [](const GGUFTensorInfo* a, const GGUFTensorInfo* b) { return a->offset < b->offset; });
    for (size_t k = 1; k < by_offset.size(); ++k) {
        const GGUFTensorInfo& prev = *by_offset[k - 1];
        const GGUFTensorInfo& next = *by_offset[k];
        if (prev.offset + prev.nbytes > next.offset)  // no overflow: both lie inside the file
            throw GGUFError(path_, "tensor " + quote_name(next.name) + " offset",
                            "data overlaps tensor " + quote_name(prev.name));
    }
}

const GGUFValue* GGUFFile::find(const std::string& key) const {
    const auto it = metadata_index_.find(key);
    return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

std::string GGUFFile::architecture() const {
    const GGUFValue* v = find("general.architecture");
    return v != nullptr && v->type == GGUFValueType::STRING ? v->s : std::string();
}

const GGUFTensorInfo* GGUFFile::find_tensor(const std::string& name) const {
    const auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GGUFTensorInfo& GGUFFile::tensor(const std::string& name) const {
    const GGUFTensorInfo* t = find_tensor(name);
    if (t == nullptr) throw GGUFError(path_, "tensor " + quote_name(name), "no tensor of that name in the file");
    return *t;
}

}  // namespace decollama

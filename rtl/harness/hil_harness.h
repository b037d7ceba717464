// Shared native Verilator harness: a DRAM model, a binary pipe protocol and the clock loop.
//
// Design-agnostic. An accelerator's main is three lines:
//
//     #include "Vmy_top.h"
//     #include "hil_harness.h"
//     int main(int argc, char** argv) { return hil::harness_main<Vmy_top>(argc, argv); }
//
// provided the top module follows the port convention in rtl/harness/README.md (clk, rst,
// reg_* register bus, mem_rd_* / mem_wr_* DRAM port, done). A design with other ports can use
// hil::Dram and hil::serve() directly with its own Device class.
//
// The protocol (README.md) runs over the process's original stdout; fd 1 is redirected to stderr
// at start so that $display output can never corrupt it.

#pragma once

#include <verilated.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <unistd.h>
#include <utility>
#include <vector>

namespace hil {

constexpr uint32_t kProtocolVersion = 1;

// ---------------------------------------------------------------------------------------------
// Signal <-> bytes. Verilator maps ports of <= 64 bits to integers and wider ones to VlWide<N>
// (little-endian 32-bit words), so a port's byte width is sizeof its C++ type when the width is
// 32, 64 or a multiple of 32 bits.

template <typename T, std::enable_if_t<std::is_integral_v<T>, int> = 0>
inline void sig_load(const T& sig, uint8_t* dst, size_t n) {
    uint64_t v = static_cast<uint64_t>(sig);
    for (size_t i = 0; i < n && i < sizeof(T); ++i) dst[i] = static_cast<uint8_t>(v >> (8 * i));
}
template <std::size_t N>
inline void sig_load(const VlWide<N>& sig, uint8_t* dst, size_t n) {
    std::memcpy(dst, sig.data(), std::min(n, N * sizeof(EData)));
}
template <typename T, std::enable_if_t<std::is_integral_v<T>, int> = 0>
inline void sig_store(T& sig, const uint8_t* src, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n && i < sizeof(T); ++i) v |= static_cast<uint64_t>(src[i]) << (8 * i);
    sig = static_cast<T>(v);
}
template <std::size_t N>
inline void sig_store(VlWide<N>& sig, const uint8_t* src, size_t n) {
    std::memcpy(sig.data(), src, std::min(n, N * sizeof(EData)));
}

// ---------------------------------------------------------------------------------------------
// DRAM model: byte-addressed storage behind one read and one write channel of `beat` bytes.
// Bandwidth is a token bucket of `bytes_per_cycle` shared by reads and writes (one DRAM behind
// both AXI-like channels); each channel moves at most one beat per cycle. Reads return in order
// `latency` cycles after acceptance (data is read at acceptance); writes are posted and visible
// at once. At most `max_outstanding` reads may be in flight.
//
// Optional page model (row_bytes > 0): the address space is cut into rows of `row_bytes`,
// interleaved over `banks` banks (bank = addr / row_bytes mod banks), each with one open row. A beat
// to another row of its bank costs `row_miss` cycles of bandwidth (precharge + activate: the bus
// moves nothing meanwhile); a beat in the other direction than the last one costs `turnaround`
// cycles (write-to-read / read-to-write bus turnaround). Penalties are charged to the token bucket,
// which may go negative, so the next beats wait. With a turnaround, a direction keeps the bus for
// up to kDirRun beats while the other waits (controllers group reads and writes the same way).
// Sequential streams thus pay a row miss per row; strided ones pay one per stride that leaves a row.

struct DramConfig {
    uint64_t size = 256ull << 20;
    double bytes_per_cycle = 8.0;
    uint32_t latency = 32;
    uint32_t max_outstanding = 256;
    uint32_t row_bytes = 0;   // 0: no page model
    uint32_t banks = 8;
    uint32_t row_miss = 0;    // cycles of bandwidth lost opening another row of a bank
    uint32_t turnaround = 0;  // cycles lost when the data bus changes direction
};

constexpr uint32_t kDirRun = 16;  // beats a direction may keep the bus while the other one waits

enum StatIndex : uint32_t {
    kStatCycles = 0,      // clock cycles run since the harness started (or was reset)
    kStatRdBeats,         // read beats accepted
    kStatWrBeats,         // write beats accepted
    kStatRdBytes,         // bytes read (beats x beat width)
    kStatWrBytes,         // bytes written (strobed bytes only)
    kStatRdBwStall,       // cycles a read request waited for bandwidth
    kStatWrBwStall,       // cycles a write request waited for bandwidth
    kStatRdOutstandingStall,  // cycles a read request waited because max_outstanding were in flight
    kStatRowMisses,       // beats that opened a row (page model)
    kStatTurnarounds,     // beats that turned the bus around (page model)
    kStatCount
};

class Dram {
  public:
    // calloc: untouched pages stay unmapped, so a large DRAM costs only what is written.
    Dram(const DramConfig& cfg, uint32_t beat)
        : cfg_(cfg), beat_(beat), size_(cfg.size), mem_(static_cast<uint8_t*>(std::calloc(cfg.size, 1))) {
        if (!mem_) {
            std::fprintf(stderr, "harness: cannot allocate %llu bytes of DRAM\n",
                         static_cast<unsigned long long>(cfg.size));
            std::exit(2);
        }
        if (cfg_.row_bytes && cfg_.row_bytes % beat_) {
            std::fprintf(stderr, "harness: DRAM row bytes %u are not a multiple of the %u-byte beat\n",
                         cfg_.row_bytes, beat_);
            std::exit(2);
        }
        open_row_.assign(std::max<uint32_t>(1, cfg_.banks), -1);
    }
    ~Dram() { std::free(mem_); }
    Dram(const Dram&) = delete;
    Dram& operator=(const Dram&) = delete;

    uint32_t beat() const { return beat_; }
    const DramConfig& config() const { return cfg_; }
    void set_timing(double bytes_per_cycle, uint32_t latency, uint32_t max_outstanding) {
        cfg_.bytes_per_cycle = bytes_per_cycle;
        cfg_.latency = std::max<uint32_t>(1, latency);
        cfg_.max_outstanding = std::max<uint32_t>(1, max_outstanding);
    }
    void set_pages(uint32_t row_bytes, uint32_t banks, uint32_t row_miss, uint32_t turnaround) {
        cfg_.row_bytes = row_bytes;
        cfg_.banks = std::max<uint32_t>(1, banks);
        cfg_.row_miss = row_miss;
        cfg_.turnaround = turnaround;
        open_row_.assign(cfg_.banks, -1);
        last_dir_ = 0;
    }
    uint8_t* data() { return mem_; }
    uint64_t size() const { return size_; }
    const uint64_t* stats() const { return stats_; }
    void clear_stats() { std::fill(std::begin(stats_), std::end(stats_), 0); }
    bool failed() const { return !error_.empty(); }
    const std::string& error() const { return error_; }
    void clear_error() { error_.clear(); }

    // --- per-cycle sequence: begin_cycle, rsp_head, grant, accept_*, pop_rsp, end_cycle ---
    void begin_cycle() {
        credit_ = std::min(credit_ + cfg_.bytes_per_cycle,
                           std::max(cfg_.bytes_per_cycle, static_cast<double>(beat_)));
    }
    // The response presented this cycle, or nullptr.
    struct Rsp {
        uint64_t due;
        uint32_t id;
        const uint8_t* data;
    };
    const Rsp* rsp_head() {
        if (rsp_count_ == 0 || rsp_due_[rsp_head_] > now_) return nullptr;
        head_ = Rsp{rsp_due_[rsp_head_], rsp_id_[rsp_head_], &rsp_data_[size_t(rsp_head_) * beat_]};
        return &head_;
    }
    // Which of the requesting channels may fire this cycle. Alternates priority when the
    // bandwidth credit covers only one beat.
    std::pair<bool, bool> grant(bool rd_valid, bool wr_valid) {
        bool rd_ok = rd_valid && rsp_count_ < cfg_.max_outstanding;
        if (rd_valid && !rd_ok) ++stats_[kStatRdOutstandingStall];
        double need = beat_;
        bool rd = false, wr = false;
        if (rd_ok && wr_valid) {
            if (credit_ >= 2 * need) {
                rd = wr = true;
            } else if (credit_ >= need) {
                bool w = prefer_write_;
                if (cfg_.turnaround && last_dir_ && dir_run_ < kDirRun) w = last_dir_ == 2;
                (w ? wr : rd) = true;
            }
        } else if (rd_ok) {
            rd = credit_ >= need;
        } else if (wr_valid) {
            wr = credit_ >= need;
        }
        if (rd_ok && !rd) ++stats_[kStatRdBwStall];
        if (wr_valid && !wr) ++stats_[kStatWrBwStall];
        if (rd && wr) prefer_write_ = !prefer_write_;
        else if (rd) prefer_write_ = true;
        else if (wr) prefer_write_ = false;
        return {rd, wr};
    }
    void accept_read(uint64_t addr, uint32_t id) {
        credit_ -= beat_ + penalty(addr, 1);
        ++stats_[kStatRdBeats];
        stats_[kStatRdBytes] += beat_;
        if (rsp_count_ == rsp_due_.size()) grow();
        uint32_t slot = (rsp_head_ + rsp_count_) % rsp_due_.size();
        rsp_due_[slot] = now_ + cfg_.latency;
        rsp_id_[slot] = id;
        uint8_t* dst = &rsp_data_[size_t(slot) * beat_];
        if (check(addr, "read")) std::memcpy(dst, &mem_[addr], beat_);
        else std::memset(dst, 0, beat_);
        ++rsp_count_;
    }
    void accept_write(uint64_t addr, const uint8_t* data, const uint8_t* strb) {
        credit_ -= beat_ + penalty(addr, 2);
        ++stats_[kStatWrBeats];
        if (!check(addr, "write")) return;
        // Eight bytes per strobe byte: a bit-by-bit loop over cloud's 128-byte result beats was
        // ~10 % of its harness CPU on the result-bound batch-16 entries (issue 19, third pass).
        uint64_t written = 0;
        uint32_t i = 0;
        for (; i + 8 <= beat_; i += 8) {
            const uint8_t s = strb[i / 8];
            if (s == 0xff) {
                std::memcpy(&mem_[addr + i], &data[i], 8);
                written += 8;
            } else if (s) {
                for (uint32_t b = 0; b < 8; ++b)
                    if ((s >> b) & 1) mem_[addr + i + b] = data[i + b];
                written += static_cast<uint64_t>(__builtin_popcount(s));
            }
        }
        for (; i < beat_; ++i) {  // a beat that is not a multiple of 8 bytes
            if ((strb[i / 8] >> (i % 8)) & 1) {
                mem_[addr + i] = data[i];
                ++written;
            }
        }
        stats_[kStatWrBytes] += written;
    }
    void pop_rsp() {
        rsp_head_ = (rsp_head_ + 1) % rsp_due_.size();
        --rsp_count_;
    }
    void end_cycle() {
        ++now_;
        ++stats_[kStatCycles];
    }
    // Each RUN starts from the same DRAM state -- all banks precharged, the bus idle, the bandwidth
    // credit full, reads preferred on a tie -- so a run's cycles never depend on what ran before (a
    // timing run and a run on data of the same program take the same cycles, and the drivers may
    // reuse the counters of a program they already ran).
    void begin_run() {
        open_row_.assign(std::max<uint32_t>(1, cfg_.banks), -1);
        last_dir_ = 0;
        dir_run_ = 0;
        prefer_write_ = false;
        credit_ = std::max(cfg_.bytes_per_cycle, static_cast<double>(beat_));
    }
    void reset_channels() {
        rsp_count_ = 0;
        credit_ = 0;
        open_row_.assign(std::max<uint32_t>(1, cfg_.banks), -1);
        last_dir_ = 0;
        dir_run_ = 0;
    }

    // Host access (memory images); returns an error message or "".
    std::string host_range(uint64_t addr, uint64_t n) const {
        if (addr > size_ || n > size_ - addr) {
            return "host access [" + std::to_string(addr) + ", +" + std::to_string(n) +
                   ") is outside the DRAM model (" + std::to_string(size_) + " bytes)";
        }
        return "";
    }

  private:
    // Bandwidth (in bytes of credit) a beat loses to the page model: row miss and turnaround.
    double penalty(uint64_t addr, int dir) {
        if (!cfg_.row_bytes) return 0.0;
        uint32_t cycles = 0;
        uint64_t unit = addr / cfg_.row_bytes;
        size_t bank = static_cast<size_t>(unit % cfg_.banks);
        int64_t row = static_cast<int64_t>(unit / cfg_.banks);
        if (open_row_.size() != cfg_.banks) open_row_.assign(cfg_.banks, -1);
        if (open_row_[bank] != row) {
            open_row_[bank] = row;
            cycles += cfg_.row_miss;
            ++stats_[kStatRowMisses];
        }
        if (last_dir_ && last_dir_ != dir) {
            cycles += cfg_.turnaround;
            ++stats_[kStatTurnarounds];
            dir_run_ = 0;
        }
        last_dir_ = dir;
        ++dir_run_;
        return cycles * cfg_.bytes_per_cycle;
    }

    // Reads in flight live in a ring (no allocation per beat); it grows when full.
    void grow() {
        size_t cap = std::max<size_t>(16, rsp_due_.size() * 2);
        std::vector<uint64_t> due(cap);
        std::vector<uint32_t> id(cap);
        std::vector<uint8_t> data(cap * beat_);
        for (uint32_t k = 0; k < rsp_count_; ++k) {
            size_t from = (rsp_head_ + k) % rsp_due_.size();
            due[k] = rsp_due_[from];
            id[k] = rsp_id_[from];
            std::memcpy(&data[size_t(k) * beat_], &rsp_data_[from * beat_], beat_);
        }
        rsp_due_.swap(due);
        rsp_id_.swap(id);
        rsp_data_.swap(data);
        rsp_head_ = 0;
    }

    bool check(uint64_t addr, const char* what) {
        if (addr % beat_ != 0 || addr > size_ || size_ - addr < beat_) {
            if (error_.empty()) {
                error_ = std::string("accelerator ") + what + " at DRAM address " + std::to_string(addr) +
                         (addr % beat_ ? " is not aligned to the " + std::to_string(beat_) + "-byte beat"
                                       : " is outside the DRAM model (" + std::to_string(size_) +
                                             " bytes)") +
                         " at cycle " + std::to_string(now_);
            }
            return false;
        }
        return true;
    }

    DramConfig cfg_;
    uint32_t beat_;
    uint64_t size_;
    uint8_t* mem_;
    std::vector<uint64_t> rsp_due_;
    std::vector<uint32_t> rsp_id_;
    std::vector<uint8_t> rsp_data_;
    uint32_t rsp_head_ = 0, rsp_count_ = 0;
    Rsp head_{};
    double credit_ = 0;
    bool prefer_write_ = false;
    std::vector<int64_t> open_row_;
    int last_dir_ = 0;  // 0 none, 1 read, 2 write
    uint32_t dir_run_ = 0;
    uint64_t now_ = 0;
    uint64_t stats_[kStatCount] = {};
    std::string error_;
};

// ---------------------------------------------------------------------------------------------
// What the protocol drives. StdDevice<Top> implements it for the standard port convention.

class Device {
  public:
    virtual ~Device() = default;
    virtual void write_reg(uint32_t index, uint32_t value) = 0;  // one clock cycle
    virtual uint32_t read_reg(uint32_t index) = 0;                // combinational, no clock
    virtual void step(uint64_t cycles) = 0;
    // Clock until done is high (checked after each rising edge) or `max_cycles`; cycles run.
    virtual uint64_t run_until_done(uint64_t max_cycles, bool* done) = 0;
    virtual void reset(uint32_t cycles) = 0;
    virtual Dram& dram() = 0;
};

// How the clock loop evaluates a model after the reset at start: nullptr means Top::eval(). A main
// may pass its model's root evaluation instead (see rtl/bismo/harness_main.cpp, rtl/bitfusion/harness_main.cpp): Top::eval() also
// runs Verilator's per-call bookkeeping (a deleter of dynamic objects, the cross-thread message queue,
// each behind a mutex), which a single-threaded model without classes never needs: ~6 % of a
// bismo-edge cycle, with two evaluations per cycle (issue 19).
template <class Top>
using RootEval = void (*)(Top&);

// A main may also pass its model's rising-edge evaluation (nullptr: evaluate the model with
// clk=0 and again with clk=1, as Verilator's eval() does for any design). The clock loop then
// evaluates once per cycle, with every input of the cycle and clk=1, through that function alone.
// Exact when (1) the design has one trigger, the rising clock edge, so an evaluation at clk=0 runs
// only the input-combinational region; (2) none of the outputs the loop reads before the rising edge
// (mem_rd_req_*, mem_wr_*, mem_rd_rsp_ready) depends combinationally on an input, so that region
// never writes them (Verilator's ico: only reg_rdata in our designs) and they are already settled by
// the previous edge; and (3) the edge's evaluation runs the input region, then the sequential one,
// once each, and leaves the edge detector's copy of the clock at 1 (what Verilator's trigger loop
// does, without computing the triggers twice and looping: rise_eval below).
// HIL_HARNESS_EVAL_LOW=1 in the harness's environment brings the two plain evaluations back;
// tests/test_rtl_low_clock.py compares every counter both ways (issue 19, third pass).
template <class Top>
using RiseEval = void (*)(Top&);

// (3) for a Verilator 5 model, given its root and its generated input-combinational (`_eval_ico`)
// and sequential (`_eval_nba`) functions. The names of the trigger fields are Verilator's internals:
// a Verilator that renames them fails to compile the harness rather than run it wrong.
template <class Root>
inline void rise_eval(Root* r, void (*ico)(Root*), void (*nba)(Root*)) {
    r->__VicoTriggered[0] = 1;
    ico(r);
    r->__VnbaTriggered[0] = 1;
    nba(r);
    r->__VnbaTriggered[0] = 0;
    r->__Vtrigprevexpr___TOP__clk__0 = 1;
}

template <class Top>
class StdDevice final : public Device {
  public:
    StdDevice(const DramConfig& cfg, int argc, char** argv, RootEval<Top> root_eval = nullptr,
              RiseEval<Top> rise_eval = nullptr)
        : ctx_(new VerilatedContext),
          dram_(cfg, static_cast<uint32_t>(sizeof(decltype(std::declval<Top&>().mem_wr_data)))) {
        ctx_->commandArgs(argc, argv);
        top_.reset(new Top{ctx_.get()});
        wbuf_.resize(dram_.beat());
        sbuf_.resize((dram_.beat() + 7) / 8);
        top_->clk = 0;
        top_->reg_wr_en = 0;
        top_->mem_rd_req_ready = 0;
        top_->mem_wr_ready = 0;
        top_->mem_rd_rsp_valid = 0;
        reset(4);
        root_eval_ = root_eval;  // after eval() ran the initial blocks and the first settle
        const char* full = std::getenv("HIL_HARNESS_EVAL_LOW");
        if (!(full && *full && std::strcmp(full, "0") != 0)) rise_eval_ = rise_eval;
    }
    ~StdDevice() override { top_->final(); }

    void write_reg(uint32_t index, uint32_t value) override {
        top_->reg_addr = index;
        top_->reg_wdata = value;
        top_->reg_wr_en = 1;
        tick();
        top_->reg_wr_en = 0;
    }
    uint32_t read_reg(uint32_t index) override {
        top_->reg_addr = index;
        eval();
        return static_cast<uint32_t>(top_->reg_rdata);
    }
    void step(uint64_t cycles) override {
        for (uint64_t i = 0; i < cycles && !dram_.failed(); ++i) tick();
    }
    uint64_t run_until_done(uint64_t max_cycles, bool* done) override {
        uint64_t n = 0;
        *done = false;
        while (n < max_cycles && !dram_.failed()) {
            tick();
            ++n;
            if (top_->done) {
                *done = true;
                break;
            }
        }
        return n;
    }
    void reset(uint32_t cycles) override {
        dram_.reset_channels();
        top_->rst = 1;
        for (uint32_t i = 0; i < std::max<uint32_t>(cycles, 1); ++i) tick();
        top_->rst = 0;
        eval();
    }
    Dram& dram() override { return dram_; }

  private:
    void eval() {
        if (root_eval_)
            root_eval_(*top_);
        else
            top_->eval();
    }

    void tick() {
        dram_.begin_cycle();
        const Dram::Rsp* rsp = dram_.rsp_head();
        if (rsp) {
            top_->mem_rd_rsp_valid = 1;
            top_->mem_rd_rsp_id = rsp->id;
            sig_store(top_->mem_rd_rsp_data, rsp->data, dram_.beat());
        } else {
            top_->mem_rd_rsp_valid = 0;
        }
        top_->clk = 0;
        if (!rise_eval_) eval();
        const bool rd_valid = top_->mem_rd_req_valid;
        const bool wr_valid = top_->mem_wr_valid;
        auto [rd, wr] = dram_.grant(rd_valid, wr_valid);
        top_->mem_rd_req_ready = rd;
        top_->mem_wr_ready = wr;
        if (rd) dram_.accept_read(static_cast<uint64_t>(top_->mem_rd_req_addr), top_->mem_rd_req_id);
        if (wr) {
            sig_load(top_->mem_wr_data, wbuf_.data(), wbuf_.size());
            sig_load(top_->mem_wr_strb, sbuf_.data(), sbuf_.size());
            dram_.accept_write(static_cast<uint64_t>(top_->mem_wr_addr), wbuf_.data(), sbuf_.data());
        }
        if (rsp && top_->mem_rd_rsp_ready) dram_.pop_rsp();
        top_->clk = 1;
        if (rise_eval_)
            rise_eval_(*top_);
        else
            eval();
        dram_.end_cycle();
    }

    std::unique_ptr<VerilatedContext> ctx_;
    std::unique_ptr<Top> top_;
    Dram dram_;
    std::vector<uint8_t> wbuf_, sbuf_;
    RootEval<Top> root_eval_ = nullptr;
    RiseEval<Top> rise_eval_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// Binary protocol over pipes (little-endian; see README.md).

enum Op : uint8_t {
    kOpWriteReg = 0x01,
    kOpReadReg = 0x02,
    kOpWriteMem = 0x03,
    kOpReadMem = 0x04,
    kOpRun = 0x05,
    kOpStep = 0x06,
    kOpStats = 0x07,
    kOpSetDram = 0x08,
    kOpWriteRegs = 0x09,
    kOpReadRegs = 0x0A,
    kOpReset = 0x0B,
    kOpClearStats = 0x0C,
    kOpSetPages = 0x0D,
    kOpQuit = 0x0F,
};

class Pipe {
  public:
    Pipe(int in_fd, int out_fd) : in_(in_fd), out_(out_fd) {}
    bool read(void* dst, size_t n) {
        auto* p = static_cast<uint8_t*>(dst);
        while (n) {
            if (rpos_ == rlen_) {
                flush();
                ssize_t got = ::read(in_, rbuf_, sizeof rbuf_);
                if (got < 0 && errno == EINTR) continue;
                if (got <= 0) return false;
                rpos_ = 0;
                rlen_ = static_cast<size_t>(got);
            }
            size_t k = std::min(n, rlen_ - rpos_);
            std::memcpy(p, rbuf_ + rpos_, k);
            rpos_ += k;
            p += k;
            n -= k;
        }
        return true;
    }
    template <typename T>
    bool get(T* v) { return read(v, sizeof(T)); }
    void write(const void* src, size_t n) {
        const auto* p = static_cast<const uint8_t*>(src);
        wbuf_.insert(wbuf_.end(), p, p + n);
        if (wbuf_.size() > (1u << 20)) flush();
    }
    template <typename T>
    void put(T v) { write(&v, sizeof(T)); }
    void flush() {
        size_t off = 0;
        while (off < wbuf_.size()) {
            ssize_t k = ::write(out_, wbuf_.data() + off, wbuf_.size() - off);
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) std::exit(3);  // the client went away
            off += static_cast<size_t>(k);
        }
        wbuf_.clear();
    }

  private:
    int in_, out_;
    uint8_t rbuf_[1 << 16];
    size_t rpos_ = 0, rlen_ = 0;
    std::vector<uint8_t> wbuf_;
};

inline void reply_error(Pipe& p, const std::string& msg) {
    p.put<uint8_t>(1);
    p.put<uint32_t>(static_cast<uint32_t>(msg.size()));
    p.write(msg.data(), msg.size());
}

// An accelerator-side DRAM error (bad address) fails the command that ran the clock; the error
// is cleared so the client can inspect state, but the run's results are not to be trusted.
inline bool reply_if_dram_failed(Pipe& p, Device& dev) {
    if (!dev.dram().failed()) return false;
    reply_error(p, dev.dram().error());
    dev.dram().clear_error();
    return true;
}

// Serve requests until QUIT or end of input. Returns the process exit code.
inline int serve(Device& dev, Pipe& p) {
    p.write("HILH", 4);
    p.put<uint32_t>(kProtocolVersion);
    p.put<uint32_t>(dev.dram().beat());
    p.put<uint64_t>(dev.dram().size());
    p.flush();
    std::vector<uint8_t> buf;
    uint8_t op;
    while (p.get(&op)) {
        switch (op) {
            case kOpWriteReg: {
                uint32_t idx, val;
                if (!p.get(&idx) || !p.get(&val)) return 2;
                dev.write_reg(idx, val);
                if (!reply_if_dram_failed(p, dev)) p.put<uint8_t>(0);
                break;
            }
            case kOpReadReg: {
                uint32_t idx;
                if (!p.get(&idx)) return 2;
                uint32_t v = dev.read_reg(idx);
                p.put<uint8_t>(0);
                p.put<uint32_t>(v);
                break;
            }
            case kOpWriteRegs: {
                uint32_t n;
                if (!p.get(&n)) return 2;
                for (uint32_t i = 0; i < n; ++i) {
                    uint32_t idx, val;
                    if (!p.get(&idx) || !p.get(&val)) return 2;
                    dev.write_reg(idx, val);
                }
                if (!reply_if_dram_failed(p, dev)) p.put<uint8_t>(0);
                break;
            }
            case kOpReadRegs: {
                uint32_t n;
                if (!p.get(&n)) return 2;
                std::vector<uint32_t> vals(n);
                for (uint32_t i = 0; i < n; ++i) {
                    uint32_t idx;
                    if (!p.get(&idx)) return 2;
                    vals[i] = dev.read_reg(idx);
                }
                p.put<uint8_t>(0);
                p.write(vals.data(), vals.size() * sizeof(uint32_t));
                break;
            }
            case kOpWriteMem: {
                uint64_t addr, n;
                if (!p.get(&addr) || !p.get(&n)) return 2;
                std::string err = dev.dram().host_range(addr, n);
                if (err.empty()) {
                    if (!p.read(dev.dram().data() + addr, n)) return 2;
                    p.put<uint8_t>(0);
                } else {
                    buf.resize(1 << 16);  // drain the payload so the stream stays in sync
                    for (uint64_t left = n; left;) {
                        uint64_t k = std::min<uint64_t>(left, buf.size());
                        if (!p.read(buf.data(), k)) return 2;
                        left -= k;
                    }
                    reply_error(p, err);
                }
                break;
            }
            case kOpReadMem: {
                uint64_t addr, n;
                if (!p.get(&addr) || !p.get(&n)) return 2;
                std::string err = dev.dram().host_range(addr, n);
                if (!err.empty()) {
                    reply_error(p, err);
                    break;
                }
                p.put<uint8_t>(0);
                p.write(dev.dram().data() + addr, n);
                break;
            }
            case kOpRun: {
                uint64_t max_cycles;
                if (!p.get(&max_cycles)) return 2;
                bool done = false;
                dev.dram().begin_run();
                uint64_t n = dev.run_until_done(max_cycles, &done);
                if (reply_if_dram_failed(p, dev)) break;
                p.put<uint8_t>(0);
                p.put<uint8_t>(done ? 1 : 0);
                p.put<uint64_t>(n);
                break;
            }
            case kOpStep: {
                uint64_t n;
                if (!p.get(&n)) return 2;
                dev.step(n);
                if (!reply_if_dram_failed(p, dev)) p.put<uint8_t>(0);
                break;
            }
            case kOpStats: {
                p.put<uint8_t>(0);
                p.put<uint32_t>(kStatCount);
                p.write(dev.dram().stats(), kStatCount * sizeof(uint64_t));
                break;
            }
            case kOpClearStats: {
                dev.dram().clear_stats();
                p.put<uint8_t>(0);
                break;
            }
            case kOpSetDram: {
                double bpc;
                uint32_t lat, outstanding;
                if (!p.get(&bpc) || !p.get(&lat) || !p.get(&outstanding)) return 2;
                if (!(bpc > 0)) {
                    reply_error(p, "DRAM bytes_per_cycle must be > 0");
                    break;
                }
                dev.dram().set_timing(bpc, lat, outstanding);
                p.put<uint8_t>(0);
                break;
            }
            case kOpSetPages: {
                uint32_t row_bytes, banks, row_miss, turnaround;
                if (!p.get(&row_bytes) || !p.get(&banks) || !p.get(&row_miss) || !p.get(&turnaround)) return 2;
                if (row_bytes && (row_bytes % dev.dram().beat() || banks < 1)) {
                    reply_error(p, "DRAM row_bytes must be a multiple of the beat and banks >= 1");
                    break;
                }
                dev.dram().set_pages(row_bytes, banks, row_miss, turnaround);
                p.put<uint8_t>(0);
                break;
            }
            case kOpReset: {
                uint32_t cycles;
                if (!p.get(&cycles)) return 2;
                dev.reset(cycles);
                dev.dram().clear_error();
                p.put<uint8_t>(0);
                break;
            }
            case kOpQuit:
                p.put<uint8_t>(0);
                p.flush();
                return 0;
            default:
                reply_error(p, "unknown protocol op " + std::to_string(op));
                p.flush();
                return 2;
        }
        // Responses are flushed when the next request has to be read (Pipe::read), so a client
        // may pipeline requests.
    }
    p.flush();
    return 0;
}

// Command line: --mem-bytes N --bytes-per-cycle F --latency N --max-outstanding N
//               [--row-bytes N --banks N --row-miss N --turnaround N]
inline bool parse_dram_args(int argc, char** argv, DramConfig* cfg, std::string* err) {
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a.rfind("+", 0) == 0) continue;  // Verilator plusargs
        if (i + 1 >= argc) {
            *err = "missing value for " + a;
            return false;
        }
        const char* v = argv[++i];
        char* end = nullptr;
        if (a == "--mem-bytes") cfg->size = std::strtoull(v, &end, 10);
        else if (a == "--bytes-per-cycle") cfg->bytes_per_cycle = std::strtod(v, &end);
        else if (a == "--latency") cfg->latency = static_cast<uint32_t>(std::strtoul(v, &end, 10));
        else if (a == "--max-outstanding") cfg->max_outstanding = static_cast<uint32_t>(std::strtoul(v, &end, 10));
        else if (a == "--row-bytes") cfg->row_bytes = static_cast<uint32_t>(std::strtoul(v, &end, 10));
        else if (a == "--banks") cfg->banks = static_cast<uint32_t>(std::strtoul(v, &end, 10));
        else if (a == "--row-miss") cfg->row_miss = static_cast<uint32_t>(std::strtoul(v, &end, 10));
        else if (a == "--turnaround") cfg->turnaround = static_cast<uint32_t>(std::strtoul(v, &end, 10));
        else {
            *err = "unknown option " + a;
            return false;
        }
        if (!end || *end) {
            *err = "bad value for " + a + ": " + v;
            return false;
        }
    }
    if (!(cfg->bytes_per_cycle > 0) || cfg->latency < 1 || cfg->max_outstanding < 1 || cfg->size == 0 ||
        cfg->banks < 1) {
        *err = "DRAM model needs bytes-per-cycle > 0, latency >= 1, max-outstanding >= 1, mem-bytes > 0";
        return false;
    }
    return true;
}

template <class Top>
int harness_main(int argc, char** argv, RootEval<Top> root_eval = nullptr, RiseEval<Top> rise_eval = nullptr) {
    // The protocol owns the original stdout; everything else printing to fd 1 goes to stderr.
    int proto_out = ::dup(1);
    ::dup2(2, 1);
    DramConfig cfg;
    std::string err;
    if (!parse_dram_args(argc, argv, &cfg, &err)) {
        std::fprintf(stderr, "harness: %s\n", err.c_str());
        return 2;
    }
    StdDevice<Top> dev(cfg, argc, argv, root_eval, rise_eval);
    Pipe pipe(0, proto_out);
    return serve(dev, pipe);
}

}  // namespace hil

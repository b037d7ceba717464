// Load engine: walks the outer loop nest of every block ahead of the compute controller and
// fires the block's LD transfers (WBUF first, then IBUF) into the free half of each buffer.
//
// A transfer is n3 x n2 x n1 bursts of `len` contiguous DRAM bytes at
//     base + sum(outer index * DRAM stride) + i3 * s3 + i2 * s2 + i1 * s1
// and fills its buffer half as one byte stream. Bursts become beat-aligned single-beat read
// requests; the responses come back in order, and their valid bytes are scattered into the banks
// by the datapath. A half is reused only after the compute controller freed it.
//
// A block with `sync` (the first block of a network layer) holds its first IBUF load until the
// compute controller has finished every earlier block and every output tile is in DRAM: the
// layer reads what the layer before it wrote. Its first WBUF load (weights do not depend on
// earlier layers) goes ahead, so it overlaps the previous layer's compute and last stores.
module bf_load #(
    parameter int DB = 24,        // DRAM beat bytes (<= 32)
    parameter int RDQ = 64,       // reads in flight (metadata FIFO depth), a power of 2
    parameter int W_CAP = 32768,  // bytes in one WBUF half (all banks)
    parameter int I_CAP = 16384,  // bytes in one IBUF half
    parameter int LNM = 9         // log2 of the WBUF banks (fusion units)
) (
    input  logic clk,
    input  logic rst,
    input  logic start,
    input  logic abort,
    input  logic [bf_pkg::BW:0] nblocks,
    input  bf_pkg::block_t tbl[bf_pkg::MAXB],
    // synchronization
    input  logic [31:0] w_freed, i_freed,
    output logic [31:0] w_loaded, i_loaded,
    input  logic [bf_pkg::BW-1:0] c_blk,  // the block the compute controller is in
    input  logic        drained,    // every output tile pushed so far is stored
    // DRAM read port
    output logic        mem_rd_req_valid,
    input  logic        mem_rd_req_ready,
    output logic [31:0] mem_rd_req_addr,
    input  logic        mem_rd_rsp_valid,
    output logic        mem_rd_rsp_ready,
    // buffer write lanes (to the datapath, with the response data)
    output logic            ld_valid,
    output logic            ld_tgt,
    output logic            ld_half,
    output logic [31:0]     ld_q0,
    output logic [5:0]      ld_lo,
    output logic [5:0]      ld_n,
    output logic [1:0]      ld_rl,
    output logic [4:0]      ld_lr,
    // status
    output logic finished,   // every transfer issued and every byte received
    output logic busy,       // issuing reads or reads in flight
    output logic wait_half,  // a transfer waits for the compute controller to free a half
    output logic wait_sync,  // a free half, but the transfer waits at a layer barrier
    output logic rd_beat,    // a read request was accepted
    output logic [5:0] rsp_bytes,  // valid bytes delivered this cycle
    output logic [7:0] err
);
  /*verilator inline_module*/
  import bf_pkg::*;

  block_t cur;  // the block whose transfers are being issued
  logic [BW-1:0] blk;
  wire [1:0] rl_w = 2'd2 - cur.a_sel;
  wire [1:0] rl_i = 2'd2 - cur.w_sel;
  wire [4:0] lr_i = 5'(cur.irows);

  typedef enum logic [2:0] {S_IDLE, S_XFER, S_BURST, S_NEXT, S_DONE} state_t;
  state_t st;

  logic [NO-1:0][15:0] oidx;  // packed, assigned whole
  logic [1:0] fire;      // transfers still to fire on this step
  logic tgt;             // transfer being issued
  logic [31:0] issued[2], loaded[2];
  logic [31:0] xbase;    // the transfer's DRAM base for this step
  logic [31:0] i1, i2, i3;  // burst indices of the transfer
  logic [31:0] ba, be;   // current and last beat address of the burst
  logic [5:0] lo0, hi_l; // first valid byte of the first beat, end of the last beat
  logic fb;              // the next beat is the burst's first

  localparam int QA = $clog2(RDQ);
  logic        q_tgt[RDQ];
  logic [5:0]  q_lo[RDQ], q_hi[RDQ];
  logic        q_last[RDQ];
  logic [1:0]  q_rl[RDQ];
  logic [4:0]  q_lr[RDQ];
  logic [QA:0] q_wp, q_rp;
  logic [31:0] qpos[2];  // stream position within the half being filled

  wire q_full = (q_wp - q_rp) == (QA+1)'(RDQ);
  wire q_empty = (q_wp == q_rp);

  int d_next;  // outer level that advances after this step, -1 at the end of the block
  always_comb begin
    d_next = -1;
    for (int o = 0; o < NO; o++) if (oidx[o] != cur.obound[o] - 16'd1) d_next = o;
  end

  wire xt = fire[0] ? 1'b0 : 1'b1;  // next transfer to fire
  wire half_free = issued[xt] < (xt ? i_freed : w_freed) + 32'd2;
  // the layer barrier: a sync block's first IBUF load (first step: all outer indices 0) waits until
  // the blocks before it have computed and stored everything (while that load is pending the
  // compute controller cannot pass this block, so c_blk == blk means it finished the earlier ones)
  wire barrier = xt && cur.sync && (oidx == '0) && !(c_blk == blk && drained);
  wire can_fire = half_free && !barrier;

  assign mem_rd_req_valid = (st == S_BURST) && !q_full;
  assign mem_rd_req_addr = ba;
  assign rd_beat = mem_rd_req_valid && mem_rd_req_ready;
  assign wait_half = (st == S_XFER) && (fire != 2'b00) && !half_free;
  assign wait_sync = (st == S_XFER) && (fire != 2'b00) && half_free && barrier;
  assign busy = (st == S_BURST) || !q_empty;
  assign finished = (st == S_DONE) && q_empty;
  assign w_loaded = loaded[0];
  assign i_loaded = loaded[1];

  // the next block's descriptor (its own always_ff: no shadow copy)
  always_ff @(posedge clk) begin
    if (start) cur <= tbl[0];
    else if (st == S_NEXT && d_next < 0 && (BW+1)'(blk) + 1'b1 != nblocks) cur <= tbl[blk+1'b1];
  end

  // Beat range of burst (j3, j2, j1) of transfer t.
  task automatic setup_burst(input logic t, input logic [31:0] xb, input logic [31:0] j3,
                             input logic [31:0] j2, input logic [31:0] j1);
    logic [31:0] a, e;
    a = xb + j3 * cur.xf[t].s3 + j2 * cur.xf[t].s2 + j1 * cur.xf[t].s1;
    e = a + cur.xf[t].len - 32'd1;
    ba <= (a / DB) * DB;
    be <= (e / DB) * DB;
    lo0 <= 6'(a % DB);
    hi_l <= 6'(e % DB + 1);
    fb <= 1'b1;
  endtask

  always_ff @(posedge clk) begin
    if (rst || abort) begin
      st <= S_IDLE;
      blk <= '0;
      q_wp <= '0;
      err <= ERR_NONE;
      issued[0] <= '0;
      issued[1] <= '0;
    end else begin
      err <= ERR_NONE;
      if (start) begin
        blk <= '0;
        oidx <= '0;
        fire <= 2'b11;
        issued[0] <= '0;
        issued[1] <= '0;
        q_wp <= '0;
        st <= (nblocks == '0) ? S_DONE : S_XFER;
      end else begin
        case (st)
          S_XFER: begin
            if (fire == 2'b00) begin
              st <= S_NEXT;
            end else if (can_fire) begin
              logic [31:0] b, tot;
              b = cur.xf[xt].base;
              for (int o = 0; o < NO; o++) b = b + 32'(oidx[o]) * cur.xf[xt].ds[o];
              tot = cur.xf[xt].len * cur.xf[xt].n1 * cur.xf[xt].n2 * cur.xf[xt].n3;
              if (cur.xf[xt].len == 0 || cur.xf[xt].n1 == 0 || cur.xf[xt].n2 == 0 || cur.xf[xt].n3 == 0 ||
                  tot > (xt ? 32'(I_CAP) : 32'(W_CAP))) begin
                err <= xt ? ERR_IBUF : ERR_WBUF;
                st <= S_DONE;
              end else begin
                tgt <= xt;
                xbase <= b;
                i1 <= '0;
                i2 <= '0;
                i3 <= '0;
                setup_burst(xt, b, 32'd0, 32'd0, 32'd0);
                st <= S_BURST;
              end
            end
          end
          S_BURST: begin
            if (rd_beat) begin
              logic last_beat, last_burst;
              last_beat = (ba == be);
              last_burst = last_beat && (i1 == cur.xf[tgt].n1 - 32'd1) && (i2 == cur.xf[tgt].n2 - 32'd1) &&
                           (i3 == cur.xf[tgt].n3 - 32'd1);
              q_tgt[q_wp[QA-1:0]] <= tgt;
              q_lo[q_wp[QA-1:0]] <= fb ? lo0 : 6'd0;
              q_hi[q_wp[QA-1:0]] <= last_beat ? hi_l : 6'(DB);
              q_last[q_wp[QA-1:0]] <= last_burst;
              q_rl[q_wp[QA-1:0]] <= tgt ? rl_i : rl_w;
              q_lr[q_wp[QA-1:0]] <= tgt ? lr_i : 5'(LNM);
              q_wp <= q_wp + 1'b1;
              fb <= 1'b0;
              if (!last_beat) begin
                ba <= ba + 32'(DB);
              end else if (last_burst) begin
                issued[tgt] <= issued[tgt] + 32'd1;
                fire[tgt] <= 1'b0;
                st <= S_XFER;
              end else if (i1 != cur.xf[tgt].n1 - 32'd1) begin
                i1 <= i1 + 32'd1;
                setup_burst(tgt, xbase, i3, i2, i1 + 32'd1);
              end else if (i2 != cur.xf[tgt].n2 - 32'd1) begin
                i1 <= '0;
                i2 <= i2 + 32'd1;
                setup_burst(tgt, xbase, i3, i2 + 32'd1, 32'd0);
              end else begin
                i1 <= '0;
                i2 <= '0;
                i3 <= i3 + 32'd1;
                setup_burst(tgt, xbase, i3 + 32'd1, 32'd0, 32'd0);
              end
            end
          end
          S_NEXT: begin
            if (d_next < 0) begin
              if ((BW+1)'(blk) + 1'b1 == nblocks) begin
                st <= S_DONE;
              end else begin
                blk <= blk + 1'b1;
                oidx <= '0;
                fire <= 2'b11;
                st <= S_XFER;
              end
            end else begin
              begin
                logic [NO-1:0][15:0] n;
                n = oidx;
                for (int o = 0; o < NO; o++)
                  if (o == d_next) n[o] = oidx[o] + 16'd1;
                  else if (o > d_next) n[o] = '0;
                oidx <= n;
              end
              fire[0] <= d_next < int'(cur.xf[0].lvl);
              fire[1] <= d_next < int'(cur.xf[1].lvl);
              st <= S_XFER;
            end
          end
          default: ;
        endcase
      end
    end
  end

  // --- response side: in-order data, realigned into the buffer half being filled ---
  wire [QA-1:0] h = q_rp[QA-1:0];
  assign mem_rd_rsp_ready = 1'b1;  // a metadata slot was reserved when the read was issued
  assign ld_valid = mem_rd_rsp_valid && !q_empty;
  assign ld_tgt = q_tgt[h];
  assign ld_half = loaded[q_tgt[h]][0];
  assign ld_q0 = qpos[q_tgt[h]];
  assign ld_lo = q_lo[h];
  assign ld_n = q_hi[h] - q_lo[h];
  assign ld_rl = q_rl[h];
  assign ld_lr = q_lr[h];
  assign rsp_bytes = ld_valid ? ld_n : 6'd0;

  always_ff @(posedge clk) begin
    if (rst || abort || start) begin
      q_rp <= '0;
      loaded[0] <= '0;
      loaded[1] <= '0;
      qpos[0] <= '0;
      qpos[1] <= '0;
    end else if (ld_valid) begin
      q_rp <= q_rp + 1'b1;
      if (q_last[h]) begin
        loaded[q_tgt[h]] <= loaded[q_tgt[h]] + 32'd1;
        qpos[q_tgt[h]] <= '0;
      end else begin
        qpos[q_tgt[h]] <= qpos[q_tgt[h]] + 32'(ld_n);
      end
    end
  end
endmodule

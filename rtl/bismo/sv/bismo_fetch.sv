// Fetch stage: 2-D strided block reads from DRAM into the LHS or RHS buffers.
//
// Instruction (128 bits):
//   [31:0]  DRAM byte address of the first block     [63:32]  block stride (bytes)
//   [79:64] beats per block                          [95:80]  blocks
//   [111:96] first buffer word address               [112] side (0 LHS, 1 RHS)
//   [113] wait for a "free" token of that side first  [114] send a "filled" token when all data is in
//
// The incoming word stream is dealt round-robin over the side's buffers: word t goes to buffer
// t mod D at address base + t div D (D = DM or DN). With DW >= DK a beat carries DW/DK words for
// as many consecutive buffers (written in parallel); with DW < DK, DK/DW beats make one word.
// The buffers take their data straight from the DRAM beat (slice i mod (DW/DK) for buffer i) or,
// when DW < DK, from `word`; this module decides which buffers write where.
// Requests for the next instruction are issued while the previous one's data is still arriving
// (descriptors of instructions in flight wait in a small queue); an instruction with zero beats
// only signals, once everything before it has landed.
module bismo_fetch #(
    parameter int DM = 8,
    parameter int DN = 8,
    parameter int DK = 256,
    parameter int DW = 256,
    parameter int LAW = 10,
    parameter int RAW = 10
) (
    input  logic                   clk,
    input  logic                   clr,
    input  logic                   ins_valid,
    output logic                   ins_ready,
    input  logic [127:0]           ins,
    input  logic                   free_l_avail,
    input  logic                   free_r_avail,
    output logic                   free_l_take,
    output logic                   free_r_take,
    output logic                   fill_l_send,
    output logic                   fill_r_send,
    output logic                   req_valid,
    input  logic                   req_grant,
    output logic [31:0]            req_addr,
    input  logic                   rsp_valid,
    input  logic [DW-1:0]          rsp_data,
    output logic [DM-1:0]          lwe,
    output logic [LAW-1:0]         lwaddr,
    output logic [DN-1:0]          rwe,
    output logic [RAW-1:0]         rwaddr,
    output logic [7:0]             lwords,  // buffer words written this cycle: $countones(lwe)
    output logic [7:0]             rwords,  // and $countones(rwe)
    output logic [DK-1:0]          word,  // DW < DK: the gathered word for the enabled buffer
    output logic                   idle,
    output logic                   tok_stall
);
  localparam int BYTES = DW / 8;
  localparam bit WIDE = DW >= DK;
  localparam int R = WIDE ? DW / DK : 1;  // words per beat
  localparam int G = WIDE ? 1 : DK / DW;  // beats per word
  localparam int DESC_W = 1 + 16 + 32 + 1;  // side, buffer base, beats, send

  // ---------------- request side ----------------
  wire [31:0] i_base = ins[31:0];
  wire [31:0] i_stride = ins[63:32];
  wire [15:0] i_bpb = ins[79:64];
  wire [15:0] i_blocks = ins[95:80];
  wire [15:0] i_buf = ins[111:96];
  wire i_side = ins[112];
  wire i_wait = ins[113];
  wire i_send = ins[114];
  wire i_zero = i_bpb == 0 || i_blocks == 0;

  logic ract;
  logic [31:0] blk_addr, stride;
  logic [15:0] beat_i, bpb, blocks_left;
  logic d_in_ready, d_valid, d_pop;
  logic [DESC_W-1:0] d_head;
  logic [2:0] d_count;

  wire tok_ok = !i_wait || (i_side ? free_r_avail : free_l_avail);
  wire room = i_zero ? d_count == 0 : d_in_ready;
  assign ins_ready = !ract && tok_ok && room;
  wire accept = ins_valid && ins_ready;
  assign free_l_take = accept && i_wait && !i_side;
  assign free_r_take = accept && i_wait && i_side;
  assign tok_stall = !ract && ins_valid && !tok_ok;
  assign req_valid = ract;

  bismo_fifo #(.W(DESC_W), .DEPTH(4)) u_desc (
      .clk(clk), .clr(clr), .in_valid(accept && !i_zero), .in_ready(d_in_ready),
      .in_data({i_side, i_buf, 32'(i_bpb) * 32'(i_blocks), i_send}),
      .out_valid(d_valid), .out_ready(d_pop), .out_data(d_head), .count(d_count)
  );

  always_ff @(posedge clk) begin
    if (clr) begin
      ract <= 1'b0;
    end else if (accept && !i_zero) begin
      ract <= 1'b1;
      req_addr <= i_base;
      blk_addr <= i_base;
      stride <= i_stride;
      bpb <= i_bpb;
      blocks_left <= i_blocks;
      beat_i <= '0;
    end else if (ract && req_grant) begin
      if (beat_i == bpb - 1) begin
        beat_i <= '0;
        if (blocks_left == 1) begin
          ract <= 1'b0;
        end else begin
          blocks_left <= blocks_left - 1;
          blk_addr <= blk_addr + stride;
          req_addr <= blk_addr + stride;
        end
      end else begin
        beat_i <= beat_i + 1;
        req_addr <= req_addr + BYTES;
      end
    end
  end

  // ---------------- response side ----------------
  wire d_side = d_head[DESC_W-1];
  wire [15:0] d_buf = d_head[DESC_W-2-:16];
  wire [31:0] d_total = d_head[32:1];
  wire d_send = d_head[0];

  logic [31:0] rcv;
  logic [7:0] bidx;
  logic [15:0] woff;
  wire [7:0] d_count_buf = d_side ? 8'(DN) : 8'(DM);
  wire last_beat = rsp_valid && rcv == d_total - 1;
  assign d_pop = last_beat;
  wire [15:0] waddr = d_buf + woff;
  assign lwaddr = LAW'(waddr);
  assign rwaddr = RAW'(waddr);
  assign idle = !ract && d_count == 0;

  logic word_done;  // a whole buffer word arrives this cycle
  if (WIDE) begin : g_wide
    assign word_done = rsp_valid;
    assign word = '0;
    for (genvar i = 0; i < DM; i++) begin : g_l
      assign lwe[i] = rsp_valid && !d_side && 32'(bidx) / R == i / R;
    end
    for (genvar j = 0; j < DN; j++) begin : g_r
      assign rwe[j] = rsp_valid && d_side && 32'(bidx) / R == j / R;
    end
  end else begin : g_gather
    localparam int GW = $clog2(G);
    logic [GW-1:0] g;
    logic [DK-DW-1:0] asm_q;
    assign word_done = rsp_valid && 32'(g) == G - 1;
    assign word = {rsp_data, asm_q};
    always_ff @(posedge clk) begin
      if (clr) g <= '0;
      else if (rsp_valid) begin
        g <= g + 1'b1;
        if (32'(g) != G - 1) asm_q[g*DW+:DW] <= rsp_data;
      end
    end
    for (genvar i = 0; i < DM; i++) begin : g_l
      assign lwe[i] = word_done && !d_side && 32'(bidx) == i;
    end
    for (genvar j = 0; j < DN; j++) begin : g_r
      assign rwe[j] = word_done && d_side && 32'(bidx) == j;
    end
  end

  // The enables of a cycle are one group of R buffers (bidx steps by R from 0 and wraps at DM or DN,
  // which the configuration makes multiples of R), so they count R words, or none. Said so rather
  // than popcounted: the counters' $countones of the enables cost the simulator about 5 % of a
  // bismo-cloud cycle, for a number the fetch unit knows.
  assign lwords = (word_done && !d_side) ? 8'(R) : 8'd0;
  assign rwords = (word_done && d_side) ? 8'(R) : 8'd0;

  always_ff @(posedge clk) begin
    if (clr) begin
      rcv <= '0;
      bidx <= '0;
      woff <= '0;
    end else if (rsp_valid) begin
      if (last_beat) begin
        rcv <= '0;
        bidx <= '0;
        woff <= '0;
      end else begin
        rcv <= rcv + 1;
        if (word_done) begin
          if (bidx + 8'(R) == d_count_buf) begin
            bidx <= '0;
            woff <= woff + 1;
          end else begin
            bidx <= bidx + 8'(R);
          end
        end
      end
    end
  end

  wire zero_send = accept && i_zero && i_send;
  assign fill_l_send = (last_beat && d_send && !d_side) || (zero_send && !i_side);
  assign fill_r_send = (last_beat && d_send && d_side) || (zero_send && i_side);
endmodule

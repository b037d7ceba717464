// Execute stage: streams buffer words through the DPA, one LHS/RHS word pair per cycle.
//
// Instruction (128 bits), one per output tile (or K chunk of it), looping over all bit pairs:
//   [15:0] LHS buffer base   [31:16] RHS buffer base   [47:32] num_k (words per bit plane)
//   [51:48] wbits-1  [55:52] abits-1  [56] LHS signed  [57] RHS signed
//   [58] clear the accumulators first  [59] write the result at the end  [60] result slot
//   [61] wait "LHS filled"  [62] wait "RHS filled"  [63] send "LHS free"  [64] send "RHS free"
//   [65] wait "result slot free"  [66] send "result ready"
// For bit planes i (LHS) and j (RHS) and word w it reads LHS[base + i*num_k + w] and
// RHS[base + j*num_k + w] and adds +-popcount << (i+j); the top plane of a signed operand has
// negative weight. wbits*abits*num_k cycles per instruction, back to back with the next one when
// that one's tokens are there (no bubble between instructions).
module bismo_exec #(
    parameter int LAW = 10,
    parameter int RAW = 10
) (
    input  logic           clk,
    input  logic           clr,
    input  logic           ins_valid,
    output logic           ins_ready,
    input  logic [127:0]   ins,
    input  logic           fill_l_avail,
    input  logic           fill_r_avail,
    input  logic           res_free_avail,
    output logic           fill_l_take,
    output logic           fill_r_take,
    output logic           res_free_take,
    output logic           free_l_send,
    output logic           free_r_send,
    output logic           res_full_send,
    // issue stage (to the buffers)
    output logic           iss_valid,
    output logic [LAW-1:0] laddr,
    output logic [RAW-1:0] raddr,
    // DPA control, stage 1 (buffer data valid) and stage 2 (popcount valid)
    output logic           en1,
    output logic           en2,
    output logic [4:0]     shift2,
    output logic           neg2,
    output logic           clr2,
    output logic           last2,
    output logic           slot2,
    output logic           idle,
    output logic           tok_stall
);
  wire [15:0] n_lbase = ins[15:0];
  wire [15:0] n_rbase = ins[31:16];
  wire [15:0] n_numk = ins[47:32];
  wire n_wait_l = ins[61], n_wait_r = ins[62], n_wait_res = ins[65];

  logic act;
  logic [15:0] numk, lrow, rrow, w;
  logic [3:0] wb1, ab1, i, j;
  logic ws, as_, c_clear, c_write, c_slot, c_free_l, c_free_r, c_send_res;

  wire tok_ok = (!n_wait_l || fill_l_avail) && (!n_wait_r || fill_r_avail) && (!n_wait_res || res_free_avail);
  wire last_w = w == numk - 1;
  wire last_step = act && last_w && j == ab1 && i == wb1;
  assign ins_ready = tok_ok && (!act || last_step);
  wire load = ins_valid && ins_ready;
  wire load_run = load && n_numk != 0;  // num_k == 0: tokens only
  assign fill_l_take = load && n_wait_l;
  assign fill_r_take = load && n_wait_r;
  assign res_free_take = load && n_wait_res;
  assign tok_stall = ins_valid && !tok_ok && !act;

  // issue
  assign iss_valid = act;
  assign laddr = LAW'(lrow + w);
  assign raddr = RAW'(rrow + w);
  wire first_step = i == 0 && j == 0 && w == 0;
  wire [4:0] iss_shift = 5'(i) + 5'(j);
  wire iss_neg = (ws && i == wb1) ^ (as_ && j == ab1);
  wire iss_clr = c_clear && first_step;
  wire iss_last = c_write && last_step;

  assign free_l_send = (last_step && c_free_l) || (load && !load_run && ins[63]);
  assign free_r_send = (last_step && c_free_r) || (load && !load_run && ins[64]);

  always_ff @(posedge clk) begin
    if (clr) begin
      act <= 1'b0;
    end else if (load_run) begin
      act <= 1'b1;
      lrow <= n_lbase;
      rrow <= n_rbase;
      numk <= n_numk;
      wb1 <= ins[51:48];
      ab1 <= ins[55:52];
      ws <= ins[56];
      as_ <= ins[57];
      c_clear <= ins[58];
      c_write <= ins[59];
      c_slot <= ins[60];
      c_free_l <= ins[63];
      c_free_r <= ins[64];
      c_send_res <= ins[66];
      i <= '0;
      j <= '0;
      w <= '0;
    end else if (act) begin
      if (last_step) begin
        act <= 1'b0;
      end else if (!last_w) begin
        w <= w + 1;
      end else begin
        w <= '0;
        if (j == ab1) begin
          j <= '0;
          rrow <= rrow - 16'(ab1) * numk;
          i <= i + 1;
          lrow <= lrow + numk;
        end else begin
          j <= j + 1;
          rrow <= rrow + numk;
        end
      end
    end
  end

  // control pipeline: issue -> stage 1 (buffer outputs) -> stage 2 (popcount registered)
  logic [4:0] shift1;
  logic neg1, clr1, last1, slot1, send1, send2;
  always_ff @(posedge clk) begin
    if (clr) begin
      en1 <= 1'b0;
      en2 <= 1'b0;
    end else begin
      en1 <= iss_valid;
      en2 <= en1;
    end
    shift1 <= iss_shift;
    neg1 <= iss_neg;
    clr1 <= iss_clr;
    last1 <= iss_last;
    slot1 <= c_slot;
    send1 <= c_send_res && iss_last;
    shift2 <= shift1;
    neg2 <= neg1;
    clr2 <= clr1;
    last2 <= last1;
    slot2 <= slot1;
    send2 <= send1;
  end
  assign res_full_send = en2 && send2;
  assign idle = !act && !en1 && !en2;
endmodule

// AXI4 master for a core's DRAM ports (the harness convention of rtl/harness/README.md), adding
// the shell's `dram_base` (the physical address of the `pynq.allocate` window) to every address.
//
// Simple on purpose, and slower than the core could go:
// - reads: single-beat AXI reads (ARLEN 0), the core's tag as ARID, so AXI's same-ID ordering is
//   the order each consumer of the core expects; one request buffered in the shell (its address
//   held stable while ARVALID waits, as AXI requires and the core's port does not promise);
// - writes: one beat at a time, and the core's write handshake completes only when the write's B
//   response arrives, so every result is in memory when the core raises done (the host reads
//   results right after done).
// Bursts and writes in flight would close the gap to the simulated DRAM model; until then a board's
// cycle counts include this shell's costs.
module hil_axi_master #(
    parameter int DW = 256,  // data bits: the core's beat = the AXI data width
    parameter int AW = 32,   // AXI address bits (32 on a Zynq-7000 HP port)
    parameter int IDW = 8
) (
    input  logic              clk,
    input  logic              rst,
    input  logic [63:0]       dram_base,
    input  logic              mem_rd_req_valid,
    output logic              mem_rd_req_ready,
    input  logic [31:0]       mem_rd_req_addr,
    input  logic [7:0]        mem_rd_req_id,
    output logic              mem_rd_rsp_valid,
    input  logic              mem_rd_rsp_ready,
    output logic [DW-1:0]     mem_rd_rsp_data,
    output logic [7:0]        mem_rd_rsp_id,
    input  logic              mem_wr_valid,
    output logic              mem_wr_ready,
    input  logic [31:0]       mem_wr_addr,
    input  logic [DW-1:0]     mem_wr_data,
    input  logic [DW/8-1:0]   mem_wr_strb,
    output logic [IDW-1:0]    m_axi_arid,
    output logic [AW-1:0]     m_axi_araddr,
    output logic [7:0]        m_axi_arlen,
    output logic [2:0]        m_axi_arsize,
    output logic [1:0]        m_axi_arburst,
    output logic              m_axi_arvalid,
    input  logic              m_axi_arready,
    input  logic [IDW-1:0]    m_axi_rid,
    input  logic [DW-1:0]     m_axi_rdata,
    input  logic [1:0]        m_axi_rresp,
    input  logic              m_axi_rlast,
    input  logic              m_axi_rvalid,
    output logic              m_axi_rready,
    output logic [IDW-1:0]    m_axi_awid,
    output logic [AW-1:0]     m_axi_awaddr,
    output logic [7:0]        m_axi_awlen,
    output logic [2:0]        m_axi_awsize,
    output logic [1:0]        m_axi_awburst,
    output logic              m_axi_awvalid,
    input  logic              m_axi_awready,
    output logic [DW-1:0]     m_axi_wdata,
    output logic [DW/8-1:0]   m_axi_wstrb,
    output logic              m_axi_wlast,
    output logic              m_axi_wvalid,
    input  logic              m_axi_wready,
    input  logic [IDW-1:0]    m_axi_bid,
    input  logic [1:0]        m_axi_bresp,
    input  logic              m_axi_bvalid,
    output logic              m_axi_bready
);
  localparam logic [2:0] SIZE = 3'($clog2(DW / 8));

  // ---- reads: a one-entry buffer in front of AR; R straight back to the core
  logic ar_pend;
  assign mem_rd_req_ready = !ar_pend || m_axi_arready;
  assign m_axi_arvalid = ar_pend;
  assign m_axi_arlen = 8'd0;
  assign m_axi_arsize = SIZE;
  assign m_axi_arburst = 2'b01;  // INCR
  always_ff @(posedge clk) begin
    if (rst) begin
      ar_pend <= 1'b0;
    end else if (mem_rd_req_valid && mem_rd_req_ready) begin
      ar_pend <= 1'b1;
      m_axi_araddr <= AW'(dram_base) + AW'(mem_rd_req_addr);
      m_axi_arid <= IDW'(mem_rd_req_id);
    end else if (m_axi_arready) begin
      ar_pend <= 1'b0;
    end
  end
  assign mem_rd_rsp_valid = m_axi_rvalid;
  assign m_axi_rready = mem_rd_rsp_ready;
  assign mem_rd_rsp_data = m_axi_rdata;
  assign mem_rd_rsp_id = 8'(m_axi_rid);

  // ---- writes: one at a time, acknowledged to the core when B arrives
  logic w_busy, aw_done, w_done;
  assign m_axi_awvalid = w_busy && !aw_done;
  assign m_axi_wvalid = w_busy && !w_done;
  assign m_axi_awid = '0;
  assign m_axi_awlen = 8'd0;
  assign m_axi_awsize = SIZE;
  assign m_axi_awburst = 2'b01;
  assign m_axi_wlast = 1'b1;
  assign m_axi_bready = 1'b1;
  assign mem_wr_ready = w_busy && m_axi_bvalid;
  always_ff @(posedge clk) begin
    if (rst) begin
      w_busy <= 1'b0;
      aw_done <= 1'b0;
      w_done <= 1'b0;
    end else if (!w_busy) begin
      if (mem_wr_valid) begin
        w_busy <= 1'b1;
        aw_done <= 1'b0;
        w_done <= 1'b0;
        m_axi_awaddr <= AW'(dram_base) + AW'(mem_wr_addr);
        m_axi_wdata <= mem_wr_data;
        m_axi_wstrb <= mem_wr_strb;
      end
    end else begin
      if (m_axi_awvalid && m_axi_awready) aw_done <= 1'b1;
      if (m_axi_wvalid && m_axi_wready) w_done <= 1'b1;
      if (m_axi_bvalid) w_busy <= 1'b0;
    end
  end

  wire unused = ^{m_axi_rresp, m_axi_rlast, m_axi_bid, m_axi_bresp};
endmodule

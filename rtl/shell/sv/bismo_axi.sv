// BISMO as a board's IP (docs/PYNQ.md): the AXI-Lite register block and the AXI4 master for DRAM
// around the unchanged core.
module bismo_axi #(
    parameter int DM = 8,
    parameter int DN = 8,
    parameter int DK = 256,
    parameter int BM = 1024,
    parameter int BN = 1024,
    parameter int DW = 256
) (
    input  logic            clk,
    input  logic            rst,
    input  logic [11:0]     s_axil_awaddr,
    input  logic [2:0]      s_axil_awprot,
    input  logic            s_axil_awvalid,
    output logic            s_axil_awready,
    input  logic [31:0]     s_axil_wdata,
    input  logic [3:0]      s_axil_wstrb,
    input  logic            s_axil_wvalid,
    output logic            s_axil_wready,
    output logic [1:0]      s_axil_bresp,
    output logic            s_axil_bvalid,
    input  logic            s_axil_bready,
    input  logic [11:0]     s_axil_araddr,
    input  logic [2:0]      s_axil_arprot,
    input  logic            s_axil_arvalid,
    output logic            s_axil_arready,
    output logic [31:0]     s_axil_rdata,
    output logic [1:0]      s_axil_rresp,
    output logic            s_axil_rvalid,
    input  logic            s_axil_rready,
    output logic [7:0]      m_axi_arid,
    output logic [31:0]     m_axi_araddr,
    output logic [7:0]      m_axi_arlen,
    output logic [2:0]      m_axi_arsize,
    output logic [1:0]      m_axi_arburst,
    output logic            m_axi_arvalid,
    input  logic            m_axi_arready,
    input  logic [7:0]      m_axi_rid,
    input  logic [DW-1:0]   m_axi_rdata,
    input  logic [1:0]      m_axi_rresp,
    input  logic            m_axi_rlast,
    input  logic            m_axi_rvalid,
    output logic            m_axi_rready,
    output logic [7:0]      m_axi_awid,
    output logic [31:0]     m_axi_awaddr,
    output logic [7:0]      m_axi_awlen,
    output logic [2:0]      m_axi_awsize,
    output logic [1:0]      m_axi_awburst,
    output logic            m_axi_awvalid,
    input  logic            m_axi_awready,
    output logic [DW-1:0]   m_axi_wdata,
    output logic [DW/8-1:0] m_axi_wstrb,
    output logic            m_axi_wlast,
    output logic            m_axi_wvalid,
    input  logic            m_axi_wready,
    input  logic [7:0]      m_axi_bid,
    input  logic [1:0]      m_axi_bresp,
    input  logic            m_axi_bvalid,
    output logic            m_axi_bready,
    output logic            done
);
  `include "bismo_top_regs.svh"
  logic reg_wr_en;
  logic [15:0] reg_addr;
  logic [31:0] reg_wdata, reg_rdata;
  logic [63:0] dram_base;
  logic mem_rd_req_valid, mem_rd_req_ready, mem_rd_rsp_valid, mem_rd_rsp_ready, mem_wr_valid, mem_wr_ready;
  logic [31:0] mem_rd_req_addr, mem_wr_addr;
  logic [7:0] mem_rd_req_id, mem_rd_rsp_id;
  logic [DW-1:0] mem_rd_rsp_data, mem_wr_data;
  logic [DW/8-1:0] mem_wr_strb;

  hil_axil_regs #(.AW(12), .SHELL_BASE(BISMO_REG_SHELL_DRAM_BASE_LO)) u_regs (.*);
  hil_axi_master #(.DW(DW), .AW(32), .IDW(8)) u_master (.*);
  bismo_top #(.DM(DM), .DN(DN), .DK(DK), .BM(BM), .BN(BN), .DW(DW)) u_core (.*);
endmodule
